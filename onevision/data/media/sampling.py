"""Which frames of a video to decode: pure arithmetic on the frame count and frame rate.

The token planner calls :func:`sample_frame_indices` with the numbers from
:func:`~onevision.data.media.probe.video_info` to know a video's frame count before any
pixel is decoded; :func:`~onevision.data.media.video.load_video` calls it with the same
numbers, so both agree.

The rules follow LLaVA-NeXT's ``process_video_with_decord`` (LLaVA-Video training code):

* target fps: take every ``round(source_fps / fps)``-th frame starting at frame 0; if that
  gives more than ``frames_upbound`` frames, take ``frames_upbound`` frames uniformly instead;
* uniform: ``np.linspace(0, total - 1, n, dtype=int)``, which always includes the first and
  the last frame;
* ``force_sample``: always exactly ``frames_upbound`` uniform frames, whatever the clip length.

Where this departs from the reference, on purpose:

* A source slower than half the target fps (a 1 fps clip sampled at 2 fps) would give a step
  of 0 there and crash; here the step is at least 1, so every frame is taken.
* ``num_frames`` asks for a uniform count explicitly. A clip with fewer frames gives all of
  them, each once: repeating frames adds tokens but no information.
* Indices are computed arithmetically: the list built is as long as the result, which the
  request bounds (``num_frames``, ``frames_upbound``, ``MAX_SAMPLED_FRAMES``), never as long
  as the clip's frame count, which comes from a header a broken file can forge.
* ``force_sample`` on a clip shorter than ``frames_upbound`` repeats frames (linspace over fewer
  indices than requested), exactly like the reference: its purpose is a fixed frame count,
  hence a fixed number of visual tokens per video.
* Timestamps: :func:`frame_timestamps` gives ``index / source_fps`` seconds before decoding;
  ``load_video`` reports the frames' presentation times from the container, the same for a
  constant frame rate and right for a variable one. The reference's fps branch divides by
  the sampling step instead, which reports wrong times.
"""

from __future__ import annotations

import numpy as np

DEFAULT_SAMPLE_FPS = 1.0
"""Target fps used when neither ``num_frames`` nor ``fps`` is given (LLaVA-NeXT's ``video_fps``)."""


MAX_SAMPLED_FRAMES = 100_000
"""Most frames one call may return: the list is sized by the sampling request or this,
never by the clip's (possibly forged) frame count."""


def sample_frame_indices(
    total_frames: int,
    source_fps: float,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    frames_upbound: int = 32,
    force_sample: bool = False,
) -> list[int]:
    """Indices (non-decreasing, in ``[0, total_frames)``) of the frames to decode.

    Args:
        total_frames: frames in the clip.
        source_fps: the clip's frame rate.
        num_frames: take this many frames uniformly (all frames if the clip has fewer).
        fps: take frames at this rate, capped by ``frames_upbound``. Used when neither
            ``num_frames`` nor ``fps`` is given, at ``DEFAULT_SAMPLE_FPS``.
        frames_upbound: cap for fps sampling and the exact count for ``force_sample``;
            0 or less means no cap.
        force_sample: always return exactly ``frames_upbound`` uniform indices (repeats when
            the clip is shorter).

    Raises:
        ValueError: inconsistent arguments, an empty clip, or uncapped fps sampling (or
            ``num_frames``/``frames_upbound``) above ``MAX_SAMPLED_FRAMES``.
    """
    if total_frames <= 0:
        raise ValueError(f"cannot sample from a clip of {total_frames} frames")
    for name, value in (("num_frames", num_frames), ("frames_upbound", frames_upbound)):
        if value is not None and value > MAX_SAMPLED_FRAMES:
            raise ValueError(f"{name}={value} is above the limit of {MAX_SAMPLED_FRAMES} frames")
    if num_frames is not None and fps is not None:
        raise ValueError(f"give num_frames ({num_frames}) or fps ({fps}), not both")
    if force_sample:
        if frames_upbound <= 0:
            raise ValueError(f"force_sample needs frames_upbound > 0, got {frames_upbound}")
        return _uniform(total_frames, frames_upbound)
    if num_frames is not None:
        if num_frames <= 0:
            raise ValueError(f"num_frames must be positive, got {num_frames}")
        return _uniform(total_frames, min(num_frames, total_frames))
    fps = DEFAULT_SAMPLE_FPS if fps is None else fps
    if fps <= 0 or source_fps <= 0:
        raise ValueError(
            f"fps sampling needs positive rates, got fps={fps}, source_fps={source_fps}"
        )
    step = max(1, round(source_fps / fps))
    count = -(-total_frames // step)  # len(range(0, total_frames, step)), without building it
    if 0 < frames_upbound < count:
        return _uniform(total_frames, frames_upbound)
    if count > MAX_SAMPLED_FRAMES:
        raise ValueError(
            f"fps sampling without a cap would take {count} of {total_frames} frames, more "
            f"than {MAX_SAMPLED_FRAMES}; set frames_upbound"
        )
    return list(range(0, total_frames, step))


def frame_timestamps(indices: list[int], source_fps: float) -> list[float]:
    """Seconds from the clip start of each frame index, at a constant ``source_fps``
    (rounded to microseconds, as ``load_video`` reports them)."""
    return [round(index / source_fps, 6) for index in indices]


def _uniform(total_frames: int, count: int) -> list[int]:
    return np.linspace(0, total_frames - 1, count, dtype=int).tolist()
