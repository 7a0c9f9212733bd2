"""Open and validate a video container with PyAV, and read its numbers without decoding.

:func:`video_info` is what the token planner calls to learn a video's frame count before any
pixel is decoded. :func:`open_video` is also the guard in front of decord: decord is handed
only files that PyAV has opened and found a decodable video stream in, because decord can
crash the process or hang on inputs it does not understand (it aborts inside FFmpeg filter
setup on a non-video file, for example).

Numbers: ``num_frames`` is the container's frame count when its header has one (MP4/MOV/AVI),
after :func:`~onevision.data.media.integrity.check_header` has found it possible; otherwise the
number of video packets, counted by demuxing without decoding (Matroska/WebM headers carry
no count), which also checks the packets reach the declared duration. ``fps`` is the stream's average frame rate. ``duration`` is
``num_frames / fps``, the span the frames cover, as LLaVA-NeXT computes it. ``width`` and
``height`` are the coded frame size (rotation metadata in phone videos is not applied, by
decord or here). A folder of frames (see :mod:`onevision.data.media.frame_folder`) is
described at an assumed frame rate.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import av

from onevision.data.media.errors import MediaError, check_readable_file, describe_head
from onevision.data.media.frame_folder import FRAME_FOLDER_FPS, FrameFolderReader
from onevision.data.media.integrity import check_header, scan_packets

# Demuxers that read single still images; a video loader handed one of these has been given an
# image (or a file whose name claims an image format).
_IMAGE_DEMUXERS = ("image2", "_pipe")


class VideoInfo(NamedTuple):
    """A video's size and timing, read without decoding; unpacks as a 5-tuple."""

    num_frames: int
    """Frames in the video stream."""
    fps: float
    """Average frame rate of the video stream."""
    duration: float
    """Seconds covered by the frames: num_frames / fps."""
    width: int
    """Frame width in pixels."""
    height: int
    """Frame height in pixels."""


def video_info(path: str | os.PathLike, *, frame_folder_fps: float = FRAME_FOLDER_FPS) -> VideoInfo:
    """Frame count, fps, duration, width and height of a video file or frame folder.

    Reads the container header (and, for formats without a frame count in the header, the
    packet headers); decodes no frames. It validates the container, the stream and the
    header's numbers; a Matroska/WebM file cut short is caught here, an MP4 cut after a
    complete header by ``load_video`` (which demuxes every file it decodes).

    Raises:
        MediaError: missing or empty file, not a container FFmpeg can open, an image or
            audio-only file, no decoder for the codec, no usable frame rate, an impossible
            frame count, or (formats without a count) packets short of the declared duration.
    """
    if os.path.isdir(path):
        folder = FrameFolderReader(path, fps=frame_folder_fps, max_pixels=None)
        return VideoInfo(
            folder.num_frames,
            folder.fps,
            folder.num_frames / folder.fps,
            folder.width,
            folder.height,
        )
    with open_video(path) as container:
        stream = video_stream(container)
        fps = stream_fps(path, stream)
        num_frames = check_header(path, container, stream, fps)
        if not num_frames:
            num_frames = scan_packets(path, container, stream, fps).count
        codec = stream.codec_context
        return VideoInfo(num_frames, fps, num_frames / fps, codec.width, codec.height)


def open_video(path: str | os.PathLike) -> av.container.InputContainer:
    """Open ``path`` with PyAV and check it has a video stream FFmpeg can decode.

    Returns the open container (use it as a context manager); :func:`video_stream` gives the
    stream the loaders decode.

    Raises:
        MediaError: with the reason, for every input that is not a decodable video.
    """
    path = check_readable_file(path)
    try:
        container = av.open(path, mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        head = describe_head(path)
        if "ftyp" in head[:16]:
            reason = (
                f"MP4/MOV file FFmpeg cannot open, truncated or missing its 'moov' index ({error})"
            )
        else:
            reason = f"not a media container FFmpeg can open ({error}); file starts with {head}"
        raise MediaError(path, reason) from error
    try:
        _check_video_stream(path, container)
    except BaseException:
        container.close()
        raise
    return container


def stream_fps(path: str | os.PathLike, stream: av.video.stream.VideoStream) -> float:
    """The stream's average frame rate, falling back to FFmpeg's guess; MediaError if neither."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise MediaError(path, "video stream has no frame rate in its header")
    return float(rate)


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The stream the loaders decode: the first video stream that is not cover art."""
    return next(
        stream
        for stream in container.streams.video
        if not stream.disposition & av.stream.Disposition.attached_pic
    )


def _check_video_stream(path: str, container: av.container.InputContainer) -> None:
    format_name = container.format.name
    if any(part in format_name for part in _IMAGE_DEMUXERS):
        raise MediaError(path, f"an image file (FFmpeg format {format_name!r}), not a video")
    found = ", ".join(
        f"{_kind(s)}/{s.codec_context.name if s.codec_context else '?'}" for s in container.streams
    )
    if not container.streams.video:
        raise MediaError(path, f"no video stream (streams found: {found or 'none'})")
    if all(s.disposition & av.stream.Disposition.attached_pic for s in container.streams.video):
        raise MediaError(path, f"no video stream, only cover art (streams found: {found})")
    codec = video_stream(container).codec_context
    if codec is None:
        raise MediaError(path, "no FFmpeg decoder for the video stream's codec")
    if codec.width <= 0 or codec.height <= 0:
        raise MediaError(path, f"video stream has no frame size ({codec.width}x{codec.height})")


def _kind(stream: av.stream.Stream) -> str:
    """"video", "audio", "data", ... from the stream's class: PyAV 15's ``Stream.type``
    dereferences a null string (and crashes the process) for a stream of unknown media type,
    which a damaged AVI header produces."""
    return type(stream).__name__.removesuffix("Stream").lower() or "unknown"
