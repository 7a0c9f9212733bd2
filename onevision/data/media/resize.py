"""The frame size a video is decoded at, from the caller's ``size`` request, and its ceiling.

The model resizes every video frame straight to 384x384, so decoding a 1080p clip at full
size only to shrink it later wastes the RGB conversion and the memory. Both backends scale
inside FFmpeg (decord's filter graph, PyAV's swscale) to the size computed here; only the
decoder's own frame buffer (one frame, in YUV) is ever full size.

The size frames come out at is checked against a pixel ceiling *before* anything is decoded:
a header claiming 8192x8192 (24 MJPEG frames of that size fit in 25 MB) would otherwise cost
200 MB of RGB per sampled frame, 6.4 GB for 32 frames.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from onevision.data.media.errors import MediaError

MAX_FRAME_PIXELS = 4096 * 4096
"""Default ceiling on width x height of one returned frame: DCI 4K (4096x2160) passes at full
size, 8K needs a ``size`` request. 32 frames at the ceiling take 1.6 GB."""

MAX_EXACT_SOURCE_PIXELS = 8192 * 8192
"""Largest stored frame resized with PIL's filter (``resample``): one such frame in RGB is
200 MB, held alone. Larger stored frames are scaled inside FFmpeg instead (area filter)."""

Size = int | tuple[int, int] | None
"""None: as stored; int: longest side at most this many pixels (aspect kept, never upscaled);
(width, height): exactly this size (aspect not kept)."""


def output_size(width: int, height: int, size: Size) -> tuple[int, int]:
    """(width, height) to decode a ``width`` x ``height`` video at, for the request ``size``.

    Raises:
        ValueError: a non-positive size.
    """
    if size is None:
        return width, height
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"max side must be positive, got {size}")
        longest = max(width, height)
        if longest <= size:
            return width, height
        scale = size / longest
        return max(1, round(width * scale)), max(1, round(height * scale))
    out_width, out_height = size
    if out_width <= 0 or out_height <= 0:
        raise ValueError(f"output size must be positive, got {out_width}x{out_height}")
    return int(out_width), int(out_height)


def bounded_output_size(
    path: str | os.PathLike, width: int, height: int, size: Size, max_pixels: int | None
) -> tuple[int, int]:
    """:func:`output_size`, refused with MediaError when it exceeds ``max_pixels`` per frame
    (None: no ceiling, for callers that only describe the video)."""
    out_width, out_height = output_size(width, height, size)
    if max_pixels is not None and out_width * out_height > max_pixels:
        raise MediaError(
            path,
            f"frames would be decoded at {out_width}x{out_height} = {out_width * out_height} "
            f"pixels, above the ceiling of {max_pixels} pixels per frame (stored {width}x{height}; "
            f"request a smaller size)",
        )
    return out_width, out_height


def resize_exact(rgb: np.ndarray, out_size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """One decoded uint8 [H, W, 3] frame resized to ``out_size`` (width, height) with PIL's
    ``resample`` filter: the pixels `onevision.processing` (and transformers' PIL processors)
    would make from the full-size frame, while only one full-size frame exists at a time."""
    if (rgb.shape[1], rgb.shape[0]) == tuple(out_size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(tuple(out_size), resample))


def exact_resize_applies(width: int, height: int, out_size: tuple[int, int], resample) -> bool:
    """Whether frames of a ``width`` x ``height`` video are resized by PIL (`resize_exact`)
    rather than scaled by FFmpeg: a ``resample`` filter was asked for, the size changes, and
    the stored frame is within `MAX_EXACT_SOURCE_PIXELS`."""
    return resample is not None and out_size != (width, height) and width * height <= MAX_EXACT_SOURCE_PIXELS
