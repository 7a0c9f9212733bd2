"""Load a video (file or folder of frames) as sampled RGB frames with their timestamps.

``load_video`` picks the frames with :func:`~onevision.data.media.sampling.sample_frame_indices`
(uniform, target fps capped by ``frames_upbound``, or LLaVA-Video's ``force_sample``) and
decodes only those, optionally at a reduced size, through one of two backends:

* ``"pyav"``: PyAV with keyframe seeking and non-reference frame skipping
  (:mod:`onevision.data.media.pyav_reader`);
* ``"decord"``: decord's ``VideoReader`` with FFmpeg-side scaling, after PyAV has checked
  the file (decord crashes or hangs on some broken inputs: see
  :mod:`onevision.data.media.decord_reader`). When decord fails on a file PyAV accepted
  (decord 0.6 has bugs on valid files, cannot open file names that are not UTF-8, and
  reports truncation less clearly) or runs out of memory, the PyAV reader decodes it, or
  raises the definitive MediaError; ``VideoClip.backend`` says which one decoded;
* ``"auto"``: PyAV. Measured with ``scripts/bench_video_decode.py`` it is the faster of the
  two at every clip length and frame count tried (decord decodes every frame between a
  keyframe and the target; the PyAV reader skips the non-reference ones), and it raises
  clean errors where decord has bugs.

Both number frames the same way (display order) and report the container's presentation
times, so they return the same indices and timestamps for the same clip; at the stored size
the pixels are identical (same FFmpeg decoder and colour conversion), at a reduced size they
differ slightly at edges (decord scales bicubic, the PyAV reader area-averages).

Memory is bounded before anything is allocated: the container's header is checked against
its packets (:mod:`~onevision.data.media.integrity`), sampling is arithmetic on the frame
count, each returned frame is at most ``max_frame_pixels`` (decoded straight to the requested
``size``, never full size first), and the whole clip at most ``MAX_CLIP_BYTES``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from onevision.data.media.decord_reader import DecordReader
from onevision.data.media.errors import MediaError
from onevision.data.media.frame_folder import FRAME_FOLDER_FPS, FrameFolderReader
from onevision.data.media.pyav_reader import PyAVReader
from onevision.data.media.resize import MAX_FRAME_PIXELS, Size
from onevision.data.media.sampling import sample_frame_indices

VideoBackend = Literal["auto", "decord", "pyav"]
BACKENDS = ("auto", "decord", "pyav")

MAX_CLIP_BYTES = 4 << 30
"""Ceiling on the RGB frames of one clip (F x H x W x 3 bytes), checked before decoding."""


@dataclass
class VideoClip:
    """Frames sampled from one video, with where they came from."""

    frames: np.ndarray
    """uint8 [F, H, W, 3] RGB frames, in the order of ``indices``."""
    indices: list[int]
    """Frame number in the source of each sampled frame (display order, from 0)."""
    timestamps: list[float]
    """Seconds from the first frame of the source to each sampled frame."""
    duration: float
    """Seconds covered by the whole source: total_frames / fps."""
    fps: float
    """Average frame rate of the source."""
    total_frames: int
    """Frames in the source."""
    backend: str
    """What decoded the frames: "decord", "pyav" or "frames" (a folder of images)."""

    @property
    def num_frames(self) -> int:
        """F, the number of sampled frames."""
        return len(self.indices)


def load_video(
    path: str | os.PathLike,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    frames_upbound: int = 32,
    force_sample: bool = False,
    backend: VideoBackend = "auto",
    size: Size = None,
    frame_folder_fps: float = FRAME_FOLDER_FPS,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
    resample=None,
) -> VideoClip:
    """Decode the sampled frames of a video file, or of a folder of frame images.

    Args:
        path: a video file, or a folder of frames (see
            :mod:`~onevision.data.media.frame_folder`).
        num_frames: take this many frames uniformly (all frames when the clip has fewer).
        fps: take frames at this rate, at most ``frames_upbound`` of them (uniform beyond);
            1 fps when neither ``num_frames`` nor ``fps`` is given.
        frames_upbound: cap for fps sampling and the exact count for ``force_sample``;
            0 or less: no cap.
        force_sample: always exactly ``frames_upbound`` uniform frames (LLaVA-Video); a
            shorter clip repeats frames.
        backend: "auto" (PyAV), "pyav" or "decord" (PyAV when decord fails).
        size: decode at a reduced size: an int caps the longest side (aspect kept, never
            upscaled), (width, height) sets it exactly; None keeps the stored size.
        frame_folder_fps: frame rate assumed for a folder of frames.
        max_frame_pixels: ceiling on width x height of each returned frame (after ``size``).
        resample: a PIL filter (e.g. ``Image.Resampling.BICUBIC``) for ``size``: each frame is
            decoded in full and resized with it, one frame at a time, giving exactly the pixels
            of resizing full-size frames afterwards (as transformers' processors do); None:
            FFmpeg scales (area filter), slightly different pixels.

    Returns:
        VideoClip with frames uint8 [F, H, W, 3].

    Raises:
        MediaError: the file is missing, empty, truncated, not a video, has no video stream,
            declares impossible numbers, needs frames or a clip above the memory ceilings, or
            cannot be decoded; the message names the file and the cause.
        ValueError: inconsistent sampling arguments or an unknown backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"video backend must be one of {BACKENDS}, got {backend!r}")
    sampling = {
        "num_frames": num_frames,
        "fps": fps,
        "frames_upbound": frames_upbound,
        "force_sample": force_sample,
    }
    if os.path.isdir(path):
        with FrameFolderReader(path, size, frame_folder_fps, max_frame_pixels, resample) as reader:
            return _sample(reader, sampling)
    if backend == "decord":
        try:
            with DecordReader(path, size, max_frame_pixels, resample) as reader:
                return _sample(reader, sampling)
        except MediaError:
            pass  # PyAV below decodes the file or raises the definitive error
    with PyAVReader(path, size, max_frame_pixels, resample) as reader:
        return _sample(reader, sampling)


def _sample(reader: DecordReader | PyAVReader | FrameFolderReader, sampling: dict) -> VideoClip:
    indices = sample_frame_indices(reader.num_frames, reader.fps, **sampling)
    width, height = reader.out_size
    needed = len(indices) * width * height * 3
    if needed > MAX_CLIP_BYTES:
        raise MediaError(
            reader.path,
            f"{len(indices)} frames at {width}x{height} need {needed / 2**30:.1f} GiB, above the "
            f"{MAX_CLIP_BYTES / 2**30:.0f} GiB ceiling per clip (sample fewer frames or a smaller size)",
        )
    return VideoClip(
        frames=reader.read(indices),
        indices=indices,
        timestamps=reader.timestamps(indices),
        duration=reader.num_frames / reader.fps,
        fps=reader.fps,
        total_frames=reader.num_frames,
        backend=reader.name,
    )
