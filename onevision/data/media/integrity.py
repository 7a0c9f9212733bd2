"""Check a video container against what its header declares, before trusting its numbers.

Two kinds of lie get past FFmpeg, which opens such files without complaint:

* **Truncation.** A file cut short keeps its header. MP4, MOV and AVI headers list a frame
  count; Matroska and WebM headers carry a duration (and, from mkvmerge, a
  ``NUMBER_OF_FRAMES`` tag). Demuxing the packets (no decoding) shows how many frames and how
  many seconds are really there; fewer than declared is an error naming both numbers.
  Tolerance for the duration check: half a frame interval or 1% of the declared duration,
  whichever is larger, so that a muxer's rounding passes and one lost frame of a short clip
  does not. The end that counts is the latest packet end over *all* streams, so a soundtrack
  that runs past the last video frame does not look like missing video. A file that
  declares neither (a live-recorded WebM, written without a Duration) cannot be checked.
* **Forged counts.** Four bytes of an MP4 sample table can claim 2^31 frames. Every frame
  takes at least one byte of the file, so a header count above the file size is impossible;
  a count far above what the declared duration holds at the stream's frame rate is too.
  :func:`check_header` rejects both at planning time, from the header alone, so nothing
  downstream ever sizes anything by such a number.

Everything else the loaders allocate is bounded by what is actually in the file (one entry
per packet) or by the sampler's frame cap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import av

from onevision.data.media.errors import MediaError

DURATION_HEADER_FORMATS = ("matroska", "webm")
"""Demuxers whose header states the duration (elsewhere FFmpeg may estimate it from the
bitrate, which says nothing about truncation; MP4/MOV/AVI are checked by frame count)."""

FRAME_SLACK = 2.0
"""A header frame count may exceed duration x fps by this factor (variable frame rates)."""


@dataclass
class PacketIndex:
    """What demuxing a file's packets found, and the video frames' presentation times."""

    count: int
    """Video packets with data: one per frame."""
    pts: list[int] | None
    """Video frame pts in display order; None when some packet has no timestamp."""
    keyframe_pts: list[int] = field(default_factory=list)
    """pts of the video keyframes."""
    end: float | None = None
    """Latest packet end over all streams, in seconds from time 0 (not from the first
    packet: Matroska's Duration is where the segment ends, so a clip whose timestamps start
    at 3 s and end at 5 s declares 5 s)."""


def declared_frames(stream: av.video.stream.VideoStream) -> int:
    """The frame count the header states (MP4/MOV/AVI, mkvmerge's tag); 0 when it states none."""
    if stream.frames:
        return int(stream.frames)
    tag = {key.upper(): value for key, value in stream.metadata.items()}.get("NUMBER_OF_FRAMES")
    return int(tag) if tag and tag.strip().isdigit() else 0


def declared_duration(container: av.container.InputContainer) -> float | None:
    """Seconds the header says the file lasts, for formats whose header states it; else None."""
    if not any(name in container.format.name for name in DURATION_HEADER_FORMATS):
        return None
    if container.duration is None or container.duration <= 0:
        return None
    return container.duration / av.time_base


def check_header(
    path: str, container: av.container.InputContainer, stream: av.video.stream.VideoStream, fps: float
) -> int:
    """The header's frame count (0 if none) after checking it is possible; reads no packets.

    Raises:
        MediaError: more frames than the file has bytes, or far more than the stream's
            declared duration holds at its frame rate.
    """
    frames = declared_frames(stream)
    if not frames:
        return 0
    size = os.path.getsize(path)
    if frames > size:
        raise MediaError(
            path, f"header declares {frames} frames but the file holds only {size} bytes"
        )
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
        holds = seconds * fps
        if frames > FRAME_SLACK * holds + 2:
            raise MediaError(
                path,
                f"header declares {frames} frames but its duration of {seconds:.3f} s at "
                f"{fps:g} fps holds about {round(holds)}",
            )
    return frames


def scan_packets(
    path: str, container: av.container.InputContainer, stream: av.video.stream.VideoStream, fps: float
) -> PacketIndex:
    """Demux every packet (no decoding) and check the file holds what its header declares.

    Memory grows with the packets actually present (two ints per video frame), never with a
    declared number.

    Raises:
        MediaError: the demuxer fails, no video frames, fewer frames than the header lists,
            or packets that end well before the declared duration (a truncated file).
    """
    promised = check_header(path, container, stream, fps)
    pts: list[int] = []
    keyframe_pts: list[int] = []
    count = 0
    end: float | None = None
    try:
        for packet in container.demux():
            if not packet.size:
                continue
            if packet.pts is not None and packet.time_base:
                length = packet.duration or 0
                if not length and packet.stream.index == stream.index:
                    length = 1 / (fps * packet.time_base)  # a frame interval, in time_base units
                stop = float((packet.pts + length) * packet.time_base)
                end = stop if end is None else max(end, stop)
            if packet.stream.index != stream.index:
                continue
            count += 1
            if packet.pts is not None:
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keyframe_pts.append(packet.pts)
    except av.FFmpegError as error:  # includes FFmpeg's ENOMEM on absurd sample tables
        raise MediaError(path, f"demuxing failed after {count} frames: {error}") from error
    if count == 0:
        raise MediaError(path, "video stream holds no frames")
    if promised and count < promised:
        raise MediaError(
            path, f"truncated: the header lists {promised} frames but only {count} are present"
        )
    _check_duration(path, container, fps, count, end)
    return PacketIndex(count, pts if len(pts) == count else None, keyframe_pts, end)


def _check_duration(
    path: str, container: av.container.InputContainer, fps: float, count: int, end: float | None
) -> None:
    declared = declared_duration(container)
    if declared is None or end is None:
        return
    tolerance = max(0.5 / fps, 0.01 * declared) + 1e-3
    if declared - end > tolerance:
        raise MediaError(
            path,
            f"truncated: the header declares {declared:.3f} s but the packets end at {end:.3f} s "
            f"({count} video frames present at {fps:g} fps)",
        )

