"""Writers for test media: unusual but valid images and videos, and broken inputs.

Everything is generated with PIL and PyAV into a folder the caller owns (a pytest
``tmp_path``), tiny so that tests stay fast. Video frame ``i`` is filled with
``frame_color(i)`` (with a white block in its top-left corner, so orientation and scaling
are visible), which lets a test tell which source frame a decoded frame is with
:func:`nearest_frame_index`.

Entry points:

* ``make_unusual_images(folder)`` / ``make_unusual_videos(folder)`` / ``make_broken(folder)``:
  dicts name -> path of every case (names in ``UNUSUAL_IMAGES``, ``UNUSUAL_VIDEOS``,
  ``BROKEN_IMAGES``, ``BROKEN_VIDEOS``);
* single writers with keyword arguments: ``make_image``, ``make_video``, ``make_frame_folder``,
  ``make_audio_only``, ``make_cmyk_jpeg``, ``make_16bit_png``, ``make_palette_png``,
  ``make_animated_gif``, ``make_exif_rotated_jpeg``;
* hostile inputs: ``truncate`` (a copy cut at a fraction), ``make_forged_frame_count_mp4``
  and ``make_huge_sample_mp4`` (4-byte edits of the sample tables, through ``edit_mp4_box``), ``make_mjpeg`` (frames of any size, fast: one JPEG
  muxed many times), ``make_video_with_audio`` and ``non_utf8_copy`` (a copy whose file
  name is not UTF-8).

Odd frame sizes: H.264 in 4:2:0 needs even width and height, so ``make_video`` switches to
4:4:4 (``yuv444p``, High 4:4:4 profile) when a size is odd and no pixel format is given.
"""

from __future__ import annotations

import io
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

PathLike = str | os.PathLike

UNUSUAL_IMAGES = (
    "tiny_1x1", "tall_1x5000", "panorama_6000x40", "cmyk_jpeg", "gray16_png",
    "palette_transparent_png", "animated_gif", "exif_rotated_jpeg", "rgba_png", "la_png",
    "gray_png", "bilevel_png",
)  # fmt: skip
UNUSUAL_VIDEOS = (
    "h264_10fps_mp4", "vp9_webm", "mpeg4_mkv", "odd_97x61_mp4", "portrait_mp4",
    "one_frame_mp4", "one_fps_3s_mp4", "frame_folder",
)  # fmt: skip
BROKEN_IMAGES = ("missing_image", "zero_byte_image", "truncated_jpeg", "html_png")
BROKEN_VIDEOS = (
    "missing_video", "zero_byte_video", "truncated_mp4", "truncated_mp4_faststart",
    "text_mp4", "audio_only_mp4", "audio_with_cover_art_mp4", "empty_frame_folder",
)  # fmt: skip

BITEXACT = {"fflags": "+bitexact"}
"""Muxer option: no random Matroska segment id or version strings, so the same arguments
write the same bytes (the fuzz tests mutate byte positions of these files)."""

_CONTAINERS = {".mp4": "mp4", ".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".avi": "avi"}
_ENCODERS = {"h264": "libx264", "vp9": "libvpx-vp9"}


def frame_color(index: int) -> tuple[int, int, int]:
    """The RGB fill of video frame ``index``; any two of the first 64 differ by > 40 (L2)."""
    raw = ((index * 71 + 32) % 256, (index * 157 + 96) % 256, (index * 37 + 160) % 256)
    return tuple(24 + value * 208 // 255 for value in raw)


def nearest_frame_index(frame: np.ndarray, count: int) -> int:
    """Which of frames 0..count-1 a decoded uint8 [H, W, 3] frame shows (by median colour)."""
    median = np.median(frame.reshape(-1, 3), axis=0)
    palette = np.array([frame_color(i) for i in range(count)], dtype=float)
    return int(np.argmin(((palette - median) ** 2).sum(axis=1)))


def frame_pixels(index: int, width: int, height: int) -> np.ndarray:
    """uint8 [height, width, 3]: frame_color(index) with a white top-left block (1/4 x 1/4)."""
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = frame_color(index)
    pixels[: max(1, height // 4), : max(1, width // 4)] = 255
    return pixels


# ----------------------------------------------------------------------------- images


def make_image(
    path: PathLike,
    *,
    width: int = 64,
    height: int = 48,
    color: tuple = (200, 30, 40),
    mode: str = "RGB",
) -> Path:
    """A solid image of ``mode`` (``color`` given in that mode), format from the suffix."""
    path = Path(path)
    Image.new(mode, (width, height), color).save(path)
    return path


def make_cmyk_jpeg(
    path: PathLike, *, width: int = 32, height: int = 24, cmyk=(0, 255, 255, 0)
) -> Path:
    """A solid CMYK JPEG; the default (no cyan, full magenta and yellow) is red."""
    return make_image(path, width=width, height=height, color=tuple(cmyk), mode="CMYK")


def make_16bit_png(path: PathLike, *, width: int = 256, height: int = 4) -> Path:
    """16-bit greyscale PNG, a ramp: pixel (x, y) = round(x * 65535 / (width - 1))."""
    path = Path(path)
    ramp = np.round(np.arange(width) * 65535 / max(1, width - 1)).astype(np.uint16)
    Image.fromarray(np.tile(ramp, (height, 1))).save(path)
    return path


def make_palette_png(path: PathLike, *, width: int = 16, height: int = 16) -> Path:
    """Palette PNG with tRNS: left half opaque red, right half fully transparent (palette black)."""
    path = Path(path)
    image = Image.new("P", (width, height), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    image.paste(0, (width // 2, 0, width, height))
    image.save(path, transparency=0)
    return path


def make_rgba_png(path: PathLike, *, width: int = 16, height: int = 16, mode: str = "RGBA") -> Path:
    """RGBA (or LA) PNG: top half opaque dark, bottom half fully transparent black."""
    path = Path(path)
    opaque = (40, 60, 80, 255) if mode == "RGBA" else (40, 255)
    clear = (0, 0, 0, 0) if mode == "RGBA" else (0, 0)
    image = Image.new(mode, (width, height), clear)
    image.paste(opaque, (0, 0, width, height // 2))
    image.save(path)
    return path


def make_animated_gif(
    path: PathLike, *, colors=((255, 0, 0), (0, 255, 0), (0, 0, 255)), size: int = 16
) -> Path:
    """An animated GIF whose frames are solid ``colors``, in order."""
    path = Path(path)
    frames = [Image.new("RGB", (size, size), color) for color in colors]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def make_exif_rotated_jpeg(
    path: PathLike, *, width: int = 64, height: int = 32, orientation: int = 6
) -> Path:
    """A JPEG stored ``width`` x ``height`` with EXIF Orientation ``orientation``.

    Stored quadrants: top-left red, top-right green, bottom-left blue, bottom-right white.
    Shown upright with Orientation 6 (rotate 90 degrees clockwise) it is ``height`` wide and
    ``width`` high: top-left blue, top-right red, bottom-left white, bottom-right green.
    """
    path = Path(path)
    pixels = np.zeros((height, width, 3), np.uint8)
    half_h, half_w = height // 2, width // 2
    pixels[:half_h, :half_w] = (255, 0, 0)
    pixels[:half_h, half_w:] = (0, 255, 0)
    pixels[half_h:, :half_w] = (0, 0, 255)
    pixels[half_h:, half_w:] = (255, 255, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    return path


def make_unusual_images(folder: PathLike) -> dict[str, Path]:
    """Every unusual-but-valid image case (``UNUSUAL_IMAGES``), written into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "tiny_1x1": make_image(folder / "tiny_1x1.png", width=1, height=1),
        "tall_1x5000": make_image(folder / "tall_1x5000.png", width=1, height=5000),
        "panorama_6000x40": make_image(folder / "panorama_6000x40.jpg", width=6000, height=40),
        "cmyk_jpeg": make_cmyk_jpeg(folder / "cmyk.jpg"),
        "gray16_png": make_16bit_png(folder / "gray16.png"),
        "palette_transparent_png": make_palette_png(folder / "palette_transparent.png"),
        "animated_gif": make_animated_gif(folder / "animated.gif"),
        "exif_rotated_jpeg": make_exif_rotated_jpeg(folder / "exif_rotated.jpg"),
        "rgba_png": make_rgba_png(folder / "rgba.png"),
        "la_png": make_rgba_png(folder / "la.png", mode="LA"),
        "gray_png": make_image(folder / "gray.png", color=100, mode="L"),
        "bilevel_png": make_image(folder / "bilevel.png", color=1, mode="1"),
    }


# ----------------------------------------------------------------------------- videos


def make_video(
    path: PathLike,
    *,
    width: int = 64,
    height: int = 48,
    frames: int = 12,
    fps: float = 10,
    codec: str = "h264",
    container: str | None = None,
    pix_fmt: str | None = None,
    gop: int | None = None,
    bframes: int | None = None,
    faststart: bool = False,
    noise: bool = False,
    metadata: dict[str, str] | None = None,
    first_pts: int = 0,
) -> Path:
    """A video whose frame ``i`` shows :func:`frame_pixels` ``(i, width, height)``.

    Args:
        path: output file; its suffix picks the container unless ``container`` is given.
        width, height: frame size (odd sizes with H.264 switch to yuv444p).
        frames: number of frames.
        fps: frame rate (constant).
        codec: "h264", "vp9", "mpeg4", "ffv1", ... (any PyAV encoder name).
        container: FFmpeg format name ("mp4", "matroska", "webm"), None: from the suffix.
        pix_fmt: encoder pixel format; None: yuv420p (yuv444p for odd H.264 sizes).
        gop: keyframe interval, exact (no scene-cut keyframes); None: the encoder's default.
        bframes: B-frames between references, always used (libx264: no adaptive choice);
            None: the encoder's default.
        faststart: MP4 only, put the 'moov' index before the data.
        noise: add random noise to every frame (big packets, for truncation tests).
        metadata: tags on the video stream (Matroska keeps them, e.g. NUMBER_OF_FRAMES).
        first_pts: timestamp of frame 0, in frame intervals (a clip cut from a longer one).
    """
    path = Path(path)
    encoder = _ENCODERS.get(codec, codec)
    if pix_fmt is None:
        odd = width % 2 or height % 2
        pix_fmt = "yuv444p" if odd and encoder == "libx264" else "yuv420p"
    options = {**BITEXACT, **({"movflags": "faststart"} if faststart else {})}
    rng = np.random.default_rng(0)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(
        str(path), "w", format=container or _CONTAINERS.get(path.suffix.lower()), options=options
    ) as out:
        stream = out.add_stream(encoder, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.metadata.update(metadata or {})
        stream_options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"} if gop else {}
        if bframes is not None:
            stream_options["bf"] = str(bframes)
            if encoder == "libx264":
                stream_options["x264-params"] = "b-adapt=0"
        if encoder == "libvpx-vp9":
            stream_options.update(deadline="realtime", **{"cpu-used": "8"})
        stream.options = stream_options
        for index in range(frames):
            pixels = frame_pixels(index, width, height)
            if noise:
                pixels = np.clip(pixels + rng.integers(-40, 40, pixels.shape), 0, 255).astype(
                    np.uint8
                )
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = first_pts + index
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_frame_folder(
    folder: PathLike, *, frames: int = 12, width: int = 32, height: int = 24, ext: str = "png"
) -> Path:
    """A folder of frame images ``frame_1.<ext>`` .. ``frame_<frames>.<ext>`` (natural order
    differs from string order past 9), frame ``i`` (from 0) showing :func:`frame_pixels`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(frames):
        Image.fromarray(frame_pixels(index, width, height)).save(
            folder / f"frame_{index + 1}.{ext}"
        )
    (folder / "notes.txt").write_text("not a frame\n")
    return folder


def make_audio_only(
    path: PathLike,
    *,
    seconds: float = 0.5,
    codec: str = "aac",
    rate: int = 16000,
    cover_art: bool = False,
) -> Path:
    """An audio file (a 440 Hz tone) with no video stream; container from the suffix.

    ``cover_art`` adds a one-picture MJPEG stream flagged as an attached picture, the way
    music files carry album art: a video stream FFmpeg lists that is not a video.
    """
    path = Path(path)
    samples = int(seconds * rate)
    tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)).astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        if cover_art:
            picture = out.add_stream("mjpeg", rate=1)
            picture.width, picture.height, picture.pix_fmt = 32, 32, "yuvj420p"
            picture.disposition = av.stream.Disposition.attached_pic.value  # PyAV < 16 takes an int
            frame = av.VideoFrame.from_ndarray(frame_pixels(0, 32, 32), format="rgb24")
            frame = frame.reformat(format="yuvj420p")
            frame.pts = 0
            for packet in [*picture.encode(frame), *picture.encode()]:
                out.mux(packet)
        chunk = 1024
        for start in range(0, samples, chunk):
            data = tone[start : start + chunk]
            data = np.pad(data, (0, chunk - len(data)))[None]
            frame = av.AudioFrame.from_ndarray(data, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_unusual_videos(folder: PathLike) -> dict[str, Path]:
    """Every unusual-but-valid video case (``UNUSUAL_VIDEOS``), written into ``folder``.

    ``vp9_webm`` is left out when this PyAV build has no libvpx-vp9 encoder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    videos = {
        "h264_10fps_mp4": make_video(folder / "h264_10fps.mp4", frames=20, fps=10, gop=5),
        "mpeg4_mkv": make_video(folder / "mpeg4.mkv", frames=12, codec="mpeg4"),
        "odd_97x61_mp4": make_video(folder / "odd_97x61.mp4", width=97, height=61, frames=6),
        "portrait_mp4": make_video(folder / "portrait.mp4", width=36, height=64, frames=6),
        "one_frame_mp4": make_video(folder / "one_frame.mp4", frames=1),
        "one_fps_3s_mp4": make_video(folder / "one_fps_3s.mp4", frames=3, fps=1),
        "frame_folder": make_frame_folder(folder / "frame_folder"),
    }
    if "libvpx-vp9" in av.codecs_available:
        videos["vp9_webm"] = make_video(folder / "vp9.webm", frames=12, codec="vp9")
    return videos


# ----------------------------------------------------------------------------- broken


def make_broken(folder: PathLike) -> dict[str, Path]:
    """Every broken input (``BROKEN_IMAGES`` + ``BROKEN_VIDEOS``), written into ``folder``.

    missing_*: a path that does not exist; zero_byte_*: empty files; truncated_jpeg: a
    JPEG cut at 60%; truncated_mp4: an MP4 cut in half (its 'moov' index, at the end, is
    lost); truncated_mp4_faststart: 'moov' first, media data cut at 60% (the header promises
    more frames than remain); text_mp4: text named .mp4; audio_only_mp4: AAC audio, no
    video stream; audio_with_cover_art_mp4: AAC audio and an attached picture; html_png: an HTML error page named .png; empty_frame_folder: a folder
    with no images.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    broken = {"missing_image": folder / "missing.jpg", "missing_video": folder / "missing.mp4"}
    for name, suffix in (("zero_byte_image", ".jpg"), ("zero_byte_video", ".mp4")):
        broken[name] = folder / f"{name}{suffix}"
        broken[name].write_bytes(b"")

    noisy = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    jpeg = folder / "whole.jpg"
    Image.fromarray(noisy).save(jpeg, quality=95)
    broken["truncated_jpeg"] = _truncate(jpeg, folder / "truncated.jpg", 0.6)

    whole = make_video(folder / "whole.mp4", frames=20, noise=True)
    broken["truncated_mp4"] = _truncate(whole, folder / "truncated.mp4", 0.5)
    whole_fs = make_video(folder / "whole_faststart.mp4", frames=20, noise=True, faststart=True)
    broken["truncated_mp4_faststart"] = _truncate(whole_fs, folder / "truncated_faststart.mp4", 0.6)

    broken["text_mp4"] = folder / "text.mp4"
    broken["text_mp4"].write_text("this is a text file, not a video\n" * 8)
    broken["audio_only_mp4"] = make_audio_only(folder / "audio_only.mp4")
    broken["audio_with_cover_art_mp4"] = make_audio_only(folder / "cover_art.mp4", cover_art=True)
    broken["html_png"] = folder / "html.png"
    broken["html_png"].write_text(
        "<!DOCTYPE html>\n<html><body><h1>404 Not Found</h1></body></html>\n"
    )
    broken["empty_frame_folder"] = folder / "empty_frame_folder"
    broken["empty_frame_folder"].mkdir(exist_ok=True)
    (broken["empty_frame_folder"] / "readme.txt").write_text("no frames here\n")
    for scratch in (jpeg, whole, whole_fs):
        scratch.unlink()
    return broken


def _truncate(source: Path, target: Path, keep: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


# ----------------------------------------------------------------------------- hostile


def truncate(source: PathLike, target: PathLike, keep: float) -> Path:
    """A copy of ``source`` holding its first ``keep`` fraction of bytes."""
    return _truncate(Path(source), Path(target), keep)


def edit_mp4_box(path: PathLike, box: bytes, offset: int, value: int) -> Path:
    """Overwrite the 32-bit big-endian field ``offset`` bytes after the type of the first
    ``box`` (e.g. b"stts") in the MP4 at ``path``, in place."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    at = data.find(box)
    assert at > 0, f"no {box!r} box in {path}"
    data[at + offset : at + offset + 4] = value.to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def make_forged_frame_count_mp4(path: PathLike, *, claimed: int = 2**31, frames: int = 12) -> Path:
    """A valid ``frames``-frame MP4 whose 'stts' (one entry: ``frames`` samples of one
    duration) is edited to claim ``claimed`` samples (4 bytes), which FFmpeg reports as the
    frame count. The track's duration in 'mdhd' is left alone."""
    path = make_video(path, frames=frames, fps=10)
    # stts: type, version+flags(4), entry_count(4), then (sample_count, delta) pairs
    return edit_mp4_box(path, b"stts", 12, claimed)


def make_huge_sample_mp4(path: PathLike, *, sample: int = 3, claimed: int = 0x2B2B2B2B) -> Path:
    """An 8-frame MP4 whose 'stsz' lists sample ``sample`` as ``claimed`` bytes (724 MB by
    default) in a 2 kB file: FFmpeg's demuxer answers ENOMEM when it reaches that packet."""
    path = make_video(path, width=32, height=24, frames=8)
    # stsz: type, version+flags(4), sample_size(4) = 0, sample_count(4), then one size each
    return edit_mp4_box(path, b"stsz", 16 + 4 * sample, claimed)


def make_mjpeg(
    path: PathLike, *, width: int, height: int, frames: int = 24, fps: int = 24
) -> Path:
    """An MJPEG video (container from the suffix: .mkv or .avi) of ``frames`` identical
    ``width`` x ``height`` frames showing ``frame_color(0)``. One JPEG is encoded and muxed
    ``frames`` times, so even 8192x8192 takes seconds; a solid colour keeps the file small."""
    path = Path(path)
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), frame_color(0)).save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()
    rate = Fraction(fps)
    with av.open(str(path), "w", format=_CONTAINERS.get(path.suffix.lower()), options=BITEXACT) as out:
        stream = out.add_stream("mjpeg", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        for index in range(frames):
            packet = av.Packet(jpeg)
            packet.stream, packet.time_base = stream, 1 / rate
            packet.pts = packet.dts = index
            packet.is_keyframe = True
            out.mux(packet)
    return path


def make_video_with_audio(
    path: PathLike, *, frames: int = 10, fps: int = 10, audio_seconds: float = 2.0
) -> Path:
    """A Matroska/WebM/MP4 file with an H.264 (VP9 for .webm) video of ``frames`` frames and
    an audio track of ``audio_seconds`` (Opus for .webm, else AAC), which may outlast the video."""
    path = Path(path)
    webm = path.suffix.lower() == ".webm"
    rate = Fraction(fps)
    with av.open(str(path), "w", format=_CONTAINERS.get(path.suffix.lower()), options=BITEXACT) as out:
        video = out.add_stream("libvpx-vp9" if webm else "libx264", rate=rate)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        if webm:
            video.options = {"deadline": "realtime", "cpu-used": "8"}
        sample_rate = 48000
        audio = out.add_stream("libopus" if webm else "aac", rate=sample_rate)
        audio.layout = "mono"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pixels(index, 64, 48), format="rgb24")
            frame.pts, frame.time_base = index, 1 / rate
            out.mux(video.encode(frame))
        out.mux(video.encode())
        total, chunk = int(audio_seconds * sample_rate), 960
        for start in range(0, total, chunk):
            data = np.zeros((1, chunk), np.float32)
            frame = av.AudioFrame.from_ndarray(data, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, start
            out.mux(audio.encode(frame))
        out.mux(audio.encode())
    return path


def non_utf8_copy(source: PathLike, folder: PathLike, suffix: str | None = None) -> str:
    """A copy of ``source`` in ``folder`` whose name holds the bytes 0xFF 0xFE (not UTF-8);
    returned as Python spells such a name, with surrogate escapes."""
    source = Path(source)
    name = b"clip-\xff\xfe" + (suffix or source.suffix).encode()
    target = os.path.join(os.fsencode(os.fspath(folder)), name)
    with open(target, "wb") as handle:
        handle.write(source.read_bytes())
    return os.fsdecode(target)
