"""Video decoding: sampling rules, both backends on unusual clips, parity, broken inputs."""

from __future__ import annotations

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from media_factory import (
    BROKEN_VIDEOS,
    make_broken,
    make_frame_folder,
    make_unusual_videos,
    make_video,
    nearest_frame_index,
)

from onevision.data.media import (
    MediaError,
    decord_reader,
    load_video,
    sample_frame_indices,
    video_info,
)
from onevision.data.media.decord_reader import DecordReader
from onevision.data.media.pyav_reader import PyAVReader
from onevision.data.media.sampling import frame_timestamps

BACKENDS = ("decord", "pyav")

# name -> (frames, fps, width, height) as media_factory writes them.
EXPECTED = {
    "h264_10fps_mp4": (20, 10.0, 64, 48),
    "vp9_webm": (12, 10.0, 64, 48),
    "mpeg4_mkv": (12, 10.0, 64, 48),
    "odd_97x61_mp4": (6, 10.0, 97, 61),
    "portrait_mp4": (6, 10.0, 36, 64),
    "one_frame_mp4": (1, 10.0, 64, 48),
    "one_fps_3s_mp4": (3, 1.0, 64, 48),
    "frame_folder": (12, 1.0, 32, 24),
}
FILE_VIDEOS = [name for name in EXPECTED if name != "frame_folder"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return make_unusual_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return make_broken(tmp_path_factory.mktemp("broken"))


def shown_indices(clip, count):
    return [nearest_frame_index(frame, count) for frame in clip.frames]


# ----------------------------------------------------------------------------- sampling


def llava_reference(total, source_fps, fps, frames_upbound, force_sample):
    """LLaVA-NeXT process_video_with_decord's index rule, for cases where it does not crash."""
    step = round(source_fps / fps)
    indices = list(range(0, total, step))
    if frames_upbound > 0 and (len(indices) > frames_upbound or force_sample):
        indices = np.linspace(0, total - 1, frames_upbound, dtype=int).tolist()
    return indices


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(1, 5000),
    source_fps=st.sampled_from([1.0, 10.0, 23.976, 25.0, 30.0, 60.0]),
    fps=st.sampled_from([0.5, 1.0, 2.0]),
    frames_upbound=st.integers(0, 64),
    force_sample=st.booleans(),
)
def test_fps_sampling_matches_llava_next(total, source_fps, fps, frames_upbound, force_sample):
    if round(source_fps / fps) < 1 or (force_sample and frames_upbound <= 0):
        return  # the reference divides by zero / has no count there; tested separately
    ours = sample_frame_indices(
        total, source_fps, fps=fps, frames_upbound=frames_upbound, force_sample=force_sample
    )
    assert ours == llava_reference(total, source_fps, fps, frames_upbound, force_sample)


def test_sampling_rules():
    assert sample_frame_indices(300, 30.0) == list(range(0, 300, 30))  # default: 1 fps
    assert sample_frame_indices(3000, 30.0, fps=1) == np.linspace(0, 2999, 32, dtype=int).tolist()
    assert sample_frame_indices(100, 30.0, num_frames=4) == [0, 33, 66, 99]
    assert sample_frame_indices(3, 1.0, num_frames=8) == [0, 1, 2]  # no repeats
    assert sample_frame_indices(3, 1.0, fps=4) == [0, 1, 2]  # slow source: every frame
    forced = sample_frame_indices(3, 1.0, frames_upbound=8, force_sample=True)
    assert len(forced) == 8 and sorted(set(forced)) == [0, 1, 2] and forced == sorted(forced)


@pytest.mark.parametrize("kwargs", [
    {"num_frames": 4, "fps": 1.0}, {"num_frames": 0}, {"fps": 0.0}, {"force_sample": True, "frames_upbound": 0},
])  # fmt: skip
def test_sampling_rejects_inconsistent_arguments(kwargs):
    with pytest.raises(ValueError):
        sample_frame_indices(100, 30.0, **kwargs)


# ----------------------------------------------------------------------------- valid videos


@pytest.mark.parametrize("name", list(EXPECTED))
def test_video_info_reads_the_header(videos, name):
    frames, fps, width, height = EXPECTED[name]
    info = video_info(videos[name])
    assert (info.num_frames, info.fps, info.width, info.height) == (frames, fps, width, height)
    assert info.duration == pytest.approx(frames / fps)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_frame_decodes_in_order_with_its_timestamp(videos, name, backend):
    frames, fps, width, height = EXPECTED[name]
    clip = load_video(videos[name], num_frames=frames, backend=backend)
    assert clip.frames.shape == (frames, height, width, 3) and clip.frames.dtype == np.uint8
    assert clip.indices == list(range(frames))
    assert shown_indices(clip, frames) == clip.indices
    assert clip.timestamps == pytest.approx([i / fps for i in range(frames)], abs=1e-6)
    assert (clip.total_frames, clip.fps, clip.duration) == (
        frames,
        fps,
        pytest.approx(frames / fps),
    )
    assert clip.backend == ("frames" if name == "frame_folder" else backend)


@pytest.mark.parametrize("name", FILE_VIDEOS)
@pytest.mark.parametrize("size", [None, 40, (20, 30)])
def test_backends_agree_on_indices_timestamps_and_pixels(videos, name, size):
    frames = EXPECTED[name][0]
    ours = {
        b: load_video(videos[name], num_frames=min(frames, 5), backend=b, size=size)
        for b in BACKENDS
    }
    decord_clip, pyav_clip = ours["decord"], ours["pyav"]
    assert decord_clip.indices == pyav_clip.indices
    assert decord_clip.timestamps == pytest.approx(pyav_clip.timestamps, abs=1e-6)
    assert decord_clip.frames.shape == pyav_clip.frames.shape
    assert decord_clip.backend == "decord"
    difference = np.abs(decord_clip.frames.astype(int) - pyav_clip.frames.astype(int))
    if size is None:
        assert difference.max() == 0  # the same decoder and colour conversion: bit-exact
    else:
        assert difference.mean() < 1.0, difference.mean()  # scaling filters differ at edges
    assert (
        shown_indices(decord_clip, frames)
        == shown_indices(pyav_clip, frames)
        == decord_clip.indices
    )


def test_fps_sampling_and_upbound_on_a_real_clip(videos):
    clip = load_video(videos["h264_10fps_mp4"], fps=2)
    assert clip.indices == [0, 5, 10, 15]
    assert clip.timestamps == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert shown_indices(clip, 20) == clip.indices
    capped = load_video(videos["h264_10fps_mp4"], fps=10, frames_upbound=8)
    assert capped.indices == np.linspace(0, 19, 8, dtype=int).tolist()
    assert shown_indices(capped, 20) == capped.indices


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_one_fps_clip_gives_all_frames_unless_forced(videos, backend):
    clip = load_video(videos["one_fps_3s_mp4"], num_frames=8, backend=backend)
    assert clip.indices == [0, 1, 2] and clip.timestamps == [0.0, 1.0, 2.0]
    forced = load_video(
        videos["one_fps_3s_mp4"], frames_upbound=8, force_sample=True, backend=backend
    )
    assert len(forced.frames) == 8
    assert shown_indices(forced, 3) == forced.indices == sorted(forced.indices)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, size, expected", [
    ("h264_10fps_mp4", 32, (32, 24)), ("h264_10fps_mp4", (20, 30), (20, 30)),
    ("h264_10fps_mp4", 500, (64, 48)), ("portrait_mp4", 32, (18, 32)), ("frame_folder", 16, (16, 12)),
])  # fmt: skip
def test_reduced_size_decoding(videos, backend, name, size, expected):
    clip = load_video(videos[name], num_frames=3, size=size, backend=backend)
    assert clip.frames.shape[1:] == (expected[1], expected[0], 3)
    assert shown_indices(clip, EXPECTED[name][0]) == clip.indices


def test_planner_count_matches_loaded_count(videos):
    for name in EXPECTED:
        info = video_info(videos[name])
        planned = sample_frame_indices(info.num_frames, info.fps, fps=2.0, frames_upbound=4)
        assert load_video(videos[name], fps=2.0, frames_upbound=4).indices == planned, name


# ----------------------------------------------------------------------------- PyAV seeking


@pytest.fixture(scope="module")
def long_gop_clip(tmp_path_factory):
    """60 frames, a keyframe every 10, two B-frames between references, noisy frames."""
    return make_video(
        tmp_path_factory.mktemp("gop") / "gop10.mp4", frames=60, gop=10, bframes=2, noise=True
    )


def test_runs_seek_only_when_the_next_keyframe_is_ahead(long_gop_clip):
    with av.open(str(long_gop_clip)) as container:
        pts = [packet.pts for packet in container.demux(video=0) if packet.size]
    assert pts != sorted(pts)  # B-frames: decode order differs from display order
    with PyAVReader(long_gop_clip) as reader:
        assert reader._keyframes == list(range(0, 60, 10))
        runs = reader._plan_runs([2, 13, 14, 19, 21, 57])
    assert runs == [(0, [2]), (10, [13, 14, 19]), (20, [21]), (50, [57])]


def read_counting(path, wanted):
    """Frames PyAVReader returns for ``wanted``, and how many frames it had decoded."""
    with PyAVReader(path) as reader:
        decoded = 0
        frames_of = reader._frames

        def counting(targets):
            nonlocal decoded
            for frame in frames_of(targets):
                decoded += 1
                yield frame

        reader._frames = counting
        return reader.read(wanted), decoded


def test_seeking_and_skipping_decode_few_frames_with_exact_pixels(long_gop_clip):
    with av.open(str(long_gop_clip)) as container:
        reference = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    wanted = [3, 27, 28, 55, 55]
    frames, decoded = read_counting(long_gop_clip, wanted)
    for frame, index in zip(frames, wanted):
        assert np.array_equal(frame, reference[index]), index
    assert decoded <= 19, decoded  # spans 0-3, 20-28, 50-55 at most; a full decode is 60
    # Of each B-frame pair x264's pyramid leaves one unreferenced (2, 5, 8): never decoded.
    frames, decoded = read_counting(long_gop_clip, [9])
    assert np.array_equal(frames[0], reference[9])
    assert decoded < 10, decoded


@pytest.mark.parametrize("backend", BACKENDS)
def test_raw_stream_without_timestamps_is_numbered_by_count(tmp_path, backend):
    # A raw H.264 elementary stream has no container timestamps and cannot seek.
    path = make_video(tmp_path / "raw.h264", frames=12, container="h264", bframes=2)
    clip = load_video(path, num_frames=4, backend=backend)
    assert clip.total_frames == 12 and clip.indices == [0, 3, 7, 11]
    assert shown_indices(clip, 12) == clip.indices
    assert clip.timestamps == frame_timestamps(clip.indices, clip.fps)


@pytest.mark.parametrize("frames", [7, 31])
def test_h264_with_b_frames_in_avi_is_numbered_in_display_order(tmp_path, frames):
    # AVI has no timestamps; FFmpeg's packet numbers follow decode order, which B-frames
    # reorder. Numbered by pts, frame 4 of 7 looked missing ("could not be decoded").
    path = make_video(tmp_path / "b.avi", frames=frames, bframes=2)
    clip = load_video(path, num_frames=frames, backend="pyav")
    assert clip.indices == list(range(frames)) == shown_indices(clip, frames)
    assert clip.timestamps == frame_timestamps(clip.indices, clip.fps)


# ----------------------------------------------------------------------------- broken inputs


@pytest.mark.parametrize("backend", ("auto", *BACKENDS))
@pytest.mark.parametrize("name, words", [
    ("missing_video", "does not exist"), ("zero_byte_video", "0 bytes"),
    ("truncated_mp4", "truncated"), ("truncated_mp4_faststart", "header lists 20 frames but only"),
    ("text_mp4", "not a media container"), ("audio_only_mp4", "no video stream"),
    ("audio_with_cover_art_mp4", "only cover art"),
    ("empty_frame_folder", "no images"),
])  # fmt: skip
def test_broken_video_raises_media_error_naming_the_file(broken, backend, name, words):
    with pytest.raises(MediaError, match=words) as caught:
        load_video(broken[name], backend=backend)
    assert caught.value.path == str(broken[name]) and str(broken[name]) in str(caught.value)


def test_every_broken_case_is_covered():
    assert set(BROKEN_VIDEOS) == {
        "missing_video", "zero_byte_video", "truncated_mp4", "truncated_mp4_faststart",
        "text_mp4", "audio_only_mp4", "audio_with_cover_art_mp4", "empty_frame_folder",
    }  # fmt: skip


@pytest.mark.parametrize("name", [n for n in BROKEN_VIDEOS if n != "truncated_mp4_faststart"])
def test_video_info_rejects_broken_inputs(broken, name):
    with pytest.raises(MediaError):
        video_info(broken[name])


def test_image_named_png_is_not_a_video(broken):
    with pytest.raises(MediaError, match="image file"):
        load_video(broken["html_png"])


def test_broken_files_never_reach_decord(broken, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("decord was handed a file PyAV rejected")

    monkeypatch.setattr(decord_reader.decord, "VideoReader", forbidden)
    for name in ("zero_byte_video", "truncated_mp4", "text_mp4", "audio_only_mp4",
                 "audio_with_cover_art_mp4", "html_png"):  # fmt: skip
        with pytest.raises(MediaError):
            DecordReader(broken[name])


def test_decord_failures_fall_back_to_pyav(tmp_path, monkeypatch):
    # decord 0.6 cannot copy out frames 48 pixels wide (nor 2-8, 12, 16, 24, 72): a real
    # failure on a valid file, which must not cost the sample.
    path = make_video(tmp_path / "w48.mp4", width=48, height=32, frames=6)
    with pytest.raises(MediaError, match="decord cannot return frames 48 pixels wide"):
        DecordReader(path)
    monkeypatch.setattr(decord_reader, "UNSUPPORTED_WIDTHS", frozenset())
    with DecordReader(path) as reader, pytest.raises(MediaError, match="decord failed to decode"):
        reader.read([0])
    clip = load_video(path, num_frames=6, backend="decord")
    assert clip.backend == "pyav"
    assert shown_indices(clip, 6) == list(range(6))


def test_frame_folder_natural_order_and_size_mismatch(tmp_path):
    folder = make_frame_folder(tmp_path / "frames", frames=11, width=16, height=12)
    clip = load_video(folder, num_frames=11, frame_folder_fps=2.0)
    assert shown_indices(clip, 11) == list(range(11))
    assert clip.timestamps[-1] == 5.0
    make_video(tmp_path / "unused.mp4", frames=1)  # other files in the folder are ignored
    from PIL import Image

    Image.new("RGB", (20, 12), (0, 0, 0)).save(folder / "frame_12.png")
    with pytest.raises(MediaError, match="frame_12.png"):
        load_video(folder, num_frames=12)
    assert load_video(folder, num_frames=12, size=(16, 12)).frames.shape == (12, 12, 16, 3)
