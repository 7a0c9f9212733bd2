"""The frame size a video is decoded at, from the caller's ``size`` request.

The model resizes every video frame straight to 384x384, so decoding a 1080p clip at full
size only to shrink it later wastes the RGB conversion and the memory. Both backends scale
inside FFmpeg (decord's filter graph, PyAV's swscale) to the size computed here.
"""

from __future__ import annotations

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
