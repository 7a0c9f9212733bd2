"""Hostile media: truncated containers, forged frame counts, huge frames, odd file names.

Each class of attack either loads correctly within a stated memory bound or raises
MediaError naming the file and the numbers involved; training skips such a sample and
counts it. The memory bound is shown by loading in a subprocess whose address space is
capped with ``RLIMIT_AS`` at 1 GiB above what the interpreter already maps after importing
the loaders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
from media_factory import (
    make_forged_frame_count_mp4,
    make_huge_sample_mp4,
    make_image,
    make_mjpeg,
    make_video,
    make_video_with_audio,
    non_utf8_copy,
    truncate,
)
from PIL import Image

from onevision.data.media import (
    MediaError,
    decord_reader,
    image_size,
    load_image,
    load_video,
    sample_frame_indices,
    video_info,
)
from onevision.data.media import video as video_module

BACKENDS = ("pyav", "decord")


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """Complete 50-frame clips at 10 fps (noisy, so bytes spread evenly over the frames)."""
    folder = tmp_path_factory.mktemp("whole")
    return {
        "mkv": make_video(folder / "v.mkv", frames=50, codec="mpeg4", noise=True),
        "webm": make_video(folder / "v.webm", frames=50, codec="vp9", noise=True),
        "mp4": make_video(folder / "v.mp4", frames=50, noise=True, faststart=True),
    }


# ----------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("container", ["mkv", "webm", "mp4"])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_container_is_rejected_naming_both_numbers(whole, tmp_path, container, keep, backend):
    path = truncate(whole[container], tmp_path / f"cut.{container}", keep)
    if container == "mp4":
        words = r"truncated: the header lists 50 frames but only \d+ are present"
    else:
        words = r"truncated: the header declares 5\.000 s but the packets end at [0-4]\.\d+ s"
    with pytest.raises(MediaError, match=words) as caught:
        load_video(path, num_frames=8, backend=backend)
    assert caught.value.path == str(path)


@pytest.mark.parametrize("container", ["mkv", "webm"])
def test_truncated_matroska_is_rejected_at_planning(whole, tmp_path, container):
    path = truncate(whole[container], tmp_path / f"cut.{container}", 0.6)
    with pytest.raises(MediaError, match="truncated: the header declares 5.000 s"):
        video_info(path)


def test_one_frame_lost_at_the_end_is_caught(whole, tmp_path):
    # Cut at 98% this WebM loses (part of) its last frame: 49 of 50 frames remain.
    path = truncate(whole["webm"], tmp_path / "cut98.webm", 0.98)
    with pytest.raises(MediaError, match=r"packets end at 4\.900 s \(49 video frames present"):
        load_video(path, num_frames=8)


@pytest.mark.parametrize("container", ["mkv", "webm", "mp4"])
def test_complete_files_pass_even_when_the_soundtrack_outlasts_the_video(whole, tmp_path, container):
    assert load_video(whole[container], num_frames=50).num_frames == 50
    path = make_video_with_audio(tmp_path / f"av.{container}", frames=10, audio_seconds=3.0)
    info = video_info(path)
    assert (info.num_frames, info.fps) == (10, 10.0)
    assert load_video(path, num_frames=10).indices == list(range(10))


@pytest.mark.parametrize("container", ["mkv", "webm", "mp4"])
def test_complete_files_whose_timestamps_start_late_pass(tmp_path, container):
    # Frames at 3.0-4.9 s; Matroska then declares a duration of 5 s (where the segment ends).
    codec = "vp9" if container == "webm" else "h264"
    path = make_video(tmp_path / f"late.{container}", frames=20, codec=codec, first_pts=30)
    assert video_info(path).num_frames == 20
    clip = load_video(path, num_frames=4)
    assert clip.indices == [0, 6, 12, 19] and clip.timestamps == [0.0, 0.6, 1.2, 1.9]


def test_matroska_frame_count_tag_is_checked(tmp_path):
    path = make_video(tmp_path / "tagged.mkv", frames=20, metadata={"NUMBER_OF_FRAMES": "30"})
    assert video_info(path).num_frames == 30  # the header's count, as for MP4
    with pytest.raises(MediaError, match="header lists 30 frames but only 20 are present"):
        load_video(path)


# ----------------------------------------------------------------------------- forged counts


def test_forged_frame_count_fails_at_planning_without_a_big_allocation(tmp_path):
    path = make_forged_frame_count_mp4(tmp_path / "forged.mp4", claimed=2**31)
    size = os.path.getsize(path)
    tracemalloc.start()
    with pytest.raises(MediaError, match=f"header declares {2**31} frames but the file holds only {size} bytes"):
        video_info(path)
    for backend in BACKENDS:
        with pytest.raises(MediaError, match=f"{2**31} frames"):
            load_video(path, num_frames=8, backend=backend)
    assert tracemalloc.get_traced_memory()[1] < 2**20  # bytes; a list of 2^31 ints is 17 GB
    tracemalloc.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_size_the_demuxer_cannot_allocate_is_a_media_error(tmp_path, backend):
    path = make_huge_sample_mp4(tmp_path / "huge_sample.mp4")
    with pytest.raises(MediaError, match=r"demuxing failed after 3 frames: \[Errno 12\] Cannot allocate memory"):
        load_video(path, num_frames=4, backend=backend)


def test_count_the_duration_cannot_hold_is_rejected(tmp_path):
    # 1000 frames fit the file's bytes, but not its 1.2 s at 10 fps.
    path = make_forged_frame_count_mp4(tmp_path / "forged.mp4", claimed=1000)
    with pytest.raises(MediaError, match="header declares 1000 frames but its duration of 1.200 s at 10 fps holds about 12"):
        video_info(path)


@pytest.mark.parametrize("sampling", [
    {"fps": 2.0, "frames_upbound": 32}, {"num_frames": 32}, {"force_sample": True, "frames_upbound": 64},
])  # fmt: skip
def test_sampling_a_huge_count_is_arithmetic(sampling):
    sample_frame_indices(100, 30.0, **sampling)  # first call imports numpy internals
    tracemalloc.start()
    indices = sample_frame_indices(2**40, 30.0, **sampling)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert indices[0] == 0 and indices == sorted(indices) and indices[-1] < 2**40
    assert len(indices) in (32, 64)
    assert peak < 2**20, peak


def test_uncapped_sampling_past_the_limit_is_refused():
    with pytest.raises(ValueError, match="would take 2147483648 of 2147483648 frames"):
        sample_frame_indices(2**31, 1.0, fps=1.0, frames_upbound=0)


# ----------------------------------------------------------------------------- huge frames

BOUNDED_LOAD = textwrap.dedent(
    """
    import json, resource, sys
    from onevision.data.media import MediaError, load_image, load_video

    def mapped():
        with open("/proc/self/status") as status:
            return {k: int(v.split()[0]) * 1024 for k, v in (l.split(":", 1) for l in status) if k in ("VmSize", "VmHWM")}

    path, size, backend, headroom = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    size = tuple(size) if isinstance(size, list) else size
    from PIL import Image
    resample = None if sys.argv[5] == "none" else Image.Resampling[sys.argv[5].upper()]
    baseline = mapped()
    cap = baseline["VmSize"] + headroom
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        if backend == "image":
            image = load_image(path)
            result = {"shape": [image.height, image.width, len(image.getbands())]}
        else:
            clip = load_video(path, frames_upbound=32, force_sample=True, size=size, backend=backend, resample=resample)
            result = {"shape": list(clip.frames.shape), "backend": clip.backend}
    except MediaError as error:
        result = {"error": str(error)}
    result["rss_growth"] = mapped()["VmHWM"] - baseline["VmHWM"]
    print(json.dumps(result))
    """
)


def bounded_load(path, size, backend, headroom=1 << 30, resample="none"):
    """load_video (load_image for backend "image") in a subprocess whose address space is
    capped at ``headroom`` bytes above its baseline after imports."""
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}  # glibc reserves 64 MB per thread arena
    done = subprocess.run(
        [sys.executable, "-c", BOUNDED_LOAD, str(path), json.dumps(size), backend, str(headroom), resample],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def huge(tmp_path_factory):
    """12 MJPEG frames of 4096x4096 (3 MB): 32 frames sampled from them (force_sample repeats
    frames) take 1.6 GB at full size, above the 1 GiB cap. 8192x8192 goes the same way; a
    quarter of its pixels keeps the decoding fast."""
    return make_mjpeg(tmp_path_factory.mktemp("huge") / "huge.mkv", width=4096, height=4096, frames=12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_frames_load_at_the_planned_size_within_the_memory_cap(huge, backend):
    result = bounded_load(huge, 384, backend)
    assert result.get("shape") == [32, 384, 384, 3], result
    assert result["rss_growth"] < 1 << 30


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_frames_resized_exactly_stay_within_the_memory_cap(huge, backend):
    # Training and inference decode at the tower's size with PIL's filter: one full-size
    # frame at a time, so 32 frames of 4096x4096 still fit in 1 GiB.
    result = bounded_load(huge, [384, 384], backend, resample="bicubic")
    assert result.get("shape") == [32, 384, 384, 3], result
    assert result["rss_growth"] < 1 << 30


@pytest.mark.parametrize("backend", BACKENDS)
def test_decoding_at_size_with_a_pil_filter_equals_resizing_full_frames(tmp_path, backend):
    path = make_video(tmp_path / "clip.mp4", frames=6)
    full = load_video(path, num_frames=4, backend=backend)
    exact = load_video(path, num_frames=4, backend=backend, size=(50, 30), resample=Image.Resampling.BICUBIC)
    expected = np.stack([np.asarray(Image.fromarray(f).resize((50, 30), Image.Resampling.BICUBIC)) for f in full.frames])
    assert exact.frames.shape == (4, 30, 50, 3)
    assert np.array_equal(exact.frames, expected)


def test_huge_frames_at_full_size_run_out_of_memory_as_a_media_error(huge):
    result = bounded_load(huge, None, "pyav")
    assert "out of memory decoding 32 frames at 4096x4096" in result.get("error", ""), result


def test_pixel_ceiling_refuses_before_decoding(huge):
    with pytest.raises(MediaError, match="4096x4096 = 16777216 pixels, above the ceiling of 1000000 pixels"):
        load_video(huge, num_frames=4, max_frame_pixels=1_000_000)
    assert load_video(huge, num_frames=2, size=1000, max_frame_pixels=1_000_000).frames.shape == (2, 1000, 1000, 3)


def test_clip_ceiling_refuses_before_decoding(huge, monkeypatch):
    monkeypatch.setattr(video_module, "MAX_CLIP_BYTES", 10 << 20)
    with pytest.raises(MediaError, match=r"32 frames at 384x384 need 0\.0 GiB, above the 0 GiB ceiling"):
        load_video(huge, frames_upbound=32, force_sample=True, size=384)
    assert load_video(huge, frames_upbound=4, force_sample=True, size=384).num_frames == 4


def test_image_out_of_memory_is_a_media_error(tmp_path):
    # 5000x5000 greyscale decodes in 25 MB; its RGB conversion needs 75 MB more.
    path = tmp_path / "big_grey.jpg"
    Image.new("L", (5000, 5000), 90).save(path, quality=50)
    result = bounded_load(path, None, "image", headroom=70 << 20)
    assert result.get("error", "").endswith("out of memory decoding a 5000x5000 image"), result
    assert bounded_load(path, None, "image", headroom=1 << 30)["shape"] == [5000, 5000, 3]


# ----------------------------------------------------------------------------- file names


def test_non_utf8_file_name_falls_back_to_pyav(tmp_path):
    path = non_utf8_copy(make_video(tmp_path / "plain.mp4", frames=6), tmp_path)
    assert os.path.exists(path) and "\udcff" in path
    assert video_info(path).num_frames == 6
    clip = load_video(path, num_frames=3, backend="decord")
    assert clip.backend == "pyav" and clip.frames.shape == (3, 48, 64, 3)
    with pytest.raises(MediaError, match="not UTF-8"):
        decord_reader.DecordReader(path)


def test_non_utf8_image_name_loads_and_errors_name_the_file(tmp_path):
    path = non_utf8_copy(make_image(tmp_path / "plain.png", width=8, height=6), tmp_path)
    assert image_size(path) == (8, 6) and load_image(path).size == (8, 6)
    missing = path.replace("clip", "gone")
    with pytest.raises(MediaError) as caught:
        load_video(missing)
    assert caught.value.path == missing


def test_decord_disagreeing_with_pyav_falls_back(tmp_path, monkeypatch):
    # Found by fuzzing: on damaged streams decord's own index can count other frames than
    # the packets, and frames it was not asked to scale come out at whatever size the
    # decoder produced. Either way PyAV, whose numbers the plan used, decodes the file.
    path = make_video(tmp_path / "v.mp4", width=64, height=48, frames=6)
    monkeypatch.setattr(decord_reader.decord.VideoReader, "__len__", lambda self: 9)
    with pytest.raises(MediaError, match="decord counts 9 frames where PyAV counts 6"):
        decord_reader.DecordReader(path)
    assert load_video(path, num_frames=6, backend="decord").backend == "pyav"
    monkeypatch.undo()

    class Odd:
        def asnumpy(self):
            return np.zeros((2, 513, 5632, 3), np.uint8)

    monkeypatch.setattr(decord_reader.decord.VideoReader, "get_batch", lambda self, indices: Odd())
    with decord_reader.DecordReader(path) as reader, pytest.raises(MediaError, match=r"shape \(2, 513, 5632, 3\), expected \(2, 48, 64, 3\)"):
        reader.read([0, 1])
    clip = load_video(path, num_frames=2, backend="decord")
    assert clip.backend == "pyav" and clip.frames.shape == (2, 48, 64, 3)


def test_decord_out_of_memory_falls_back_to_pyav(tmp_path, monkeypatch):
    path = make_video(tmp_path / "v.mp4", width=64, height=48, frames=6)

    def exhausted(self, indices):
        raise MemoryError

    monkeypatch.setattr(decord_reader.decord.VideoReader, "get_batch", exhausted)
    with decord_reader.DecordReader(path) as reader, pytest.raises(MediaError, match="decord ran out of memory"):
        reader.read([0, 1])
    assert load_video(path, num_frames=6, backend="decord").backend == "pyav"


# ----------------------------------------------------------------------------- training


def test_training_skips_and_counts_hostile_videos_and_keeps_the_rest(whole, tmp_path):
    from onevision.data.dataset import DataConfig, OneVisionDataset, Skipped
    from onevision.data.records import Record, Turn
    from onevision.model.config import preset
    from onevision.tokenizer import train_small_tokenizer

    videos = {
        "truncated": truncate(whole["webm"], tmp_path / "cut.webm", 0.6),
        "forged": make_forged_frame_count_mp4(tmp_path / "forged.mp4"),
        "non_utf8": non_utf8_copy(make_video(tmp_path / "fine.mp4", frames=6, fps=2), tmp_path),
    }
    turns = [Turn("user", "<video>\nWhat happens?"), Turn("assistant", "Colours change.")]
    records = [
        Record(id=name, turns=turns, video=str(path), modality="video", source="part.json", index=i)
        for i, (name, path) in enumerate(videos.items())
    ]
    tokenizer = train_small_tokenizer(["What happens?", "Colours change."] * 20, vocab_size=300)
    dataset = OneVisionDataset(records, tokenizer, DataConfig(visual=preset("debug").visual))
    items = {record.id: dataset[i] for i, record in enumerate(records)}
    for name, words in (("truncated", "header declares 5.000 s but the packets end at"),
                        ("forged", f"header declares {2**31} frames")):  # fmt: skip
        item = items[name]
        assert isinstance(item, Skipped) and item.kind == "media", item
        assert item.file == str(videos[name]) and words in item.reason
    assert not isinstance(items["non_utf8"], Skipped)
    assert items["non_utf8"].pixel_values.shape[0] == items["non_utf8"].plans[0].frames
    # Planning (headers and packets, nothing decoded) already finds both.
    lengths = dataset.lengths()
    assert lengths[0] == lengths[1] == 0 and lengths[2] == len(items["non_utf8"].input_ids)
    assert [skip.id for skip in dataset.known_bad()] == ["truncated", "forged"]
