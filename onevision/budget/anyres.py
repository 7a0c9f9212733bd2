"""AnyRes geometry: best grid resolution, unpadding and downscaling of the crop feature map.

LLaVA-OneVision (arXiv 2408.03326, Sec. 3 "AnyRes-Max-N") splits a high-resolution image into
base-size crops laid out on a grid chosen from `grid_pinpoints`, encodes every crop, stitches
the crop features into one map, removes the rows or columns that came from padding, and
bilinearly shrinks the map when it holds more than N crops' worth of tokens. The formulas
below reproduce transformers' `llava_onevision` (5.x) bit for bit, float rounding included,
because a token count that is off by one misaligns every token after it.

Sizes follow the convention of each function's docstring: (height, width) unless it says
otherwise.
"""

from __future__ import annotations

import math


def default_grid_pinpoints(image_size: int = 384, max_grid: int = 6) -> list[tuple[int, int]]:
    """All (height, width) multiples of `image_size` from 1x1 to `max_grid`x`max_grid` crops.

    Row-major over height then width, the order the released configs list them in; order
    matters only for ties, which `select_best_resolution` breaks by first occurrence.
    """
    return [
        (rows * image_size, cols * image_size)
        for rows in range(1, max_grid + 1)
        for cols in range(1, max_grid + 1)
    ]


def select_best_resolution(
    original_size: tuple[int, int], pinpoints: list[tuple[int, int]]
) -> tuple[int, int]:
    """Pick the pinpoint that keeps the most effective pixels, then wastes the least.

    Args:
        original_size: (height, width) of the image in pixels.
        pinpoints: candidate (height, width) resolutions.

    Returns:
        The chosen (height, width).
    """
    original_height, original_width = original_size
    if original_height <= 0 or original_width <= 0:
        raise ValueError(f"image size must be positive, got height={original_height} width={original_width}")
    best_fit = None
    max_effective = 0
    min_wasted = float("inf")
    for height, width in pinpoints:
        scale = min(width / original_width, height / original_height)
        down_w, down_h = int(original_width * scale), int(original_height * scale)
        effective = min(down_w * down_h, original_width * original_height)
        wasted = width * height - effective
        if effective > max_effective or (effective == max_effective and wasted < min_wasted):
            max_effective, min_wasted, best_fit = effective, wasted, (height, width)
    if best_fit is None:
        raise ValueError(f"no usable grid pinpoint for image size (h, w)={original_size}: {pinpoints}")
    return best_fit


def unpadded_shape(
    original_size: tuple[int, int], feature_shape: tuple[int, int], rounding: str = "round"
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Rows and columns of the stitched crop feature map that hold image, not padding.

    The crops came from an aspect-preserving resize centred in the grid, so padding sits
    symmetrically on one axis; `(cur - new) // 2` rows (or columns) are dropped from each side.
    The kept side is `int(round(x, 7))` in transformers ('round') and `int(x)` in LLaVA-NeXT's
    `unpad_image` ('truncate'); they differ when x lands just below an integer.

    Args:
        original_size: (height, width) of the original image in pixels.
        feature_shape: (height, width) of the stitched feature map, patches per side x grid.
        rounding: 'round' (transformers) or 'truncate' (LLaVA-NeXT).

    Returns:
        ((height, width) kept, (top, left) offset of the kept window in the map).
    """
    if rounding not in ("round", "truncate"):
        raise ValueError(f"rounding must be 'round' or 'truncate', got {rounding!r}")
    original_height, original_width = original_size
    current_height, current_width = feature_shape

    def kept(x: float) -> int:
        return int(round(x, 7)) if rounding == "round" else int(x)

    if original_width / original_height > current_width / current_height:
        new_height = kept(original_height * (current_width / original_width))
        padding = (current_height - new_height) // 2
        return (current_height - 2 * padding, current_width), (padding, 0)
    new_width = kept(original_width * (current_height / original_height))
    padding = (current_width - new_width) // 2
    return (current_height, current_width - 2 * padding), (0, padding)


def downscaled_shape(shape: tuple[int, int], max_crops: int, patches_per_side: int) -> tuple[int, int]:
    """AnyRes-Max-N: shrink an (h, w) feature map holding more than N crops' worth of tokens.

    With r = sqrt(h*w / (N * side^2)), the map is resized to (int(h // r), int(w // r)) when
    r > 1.1 (the 10% slack is the reference's), and kept as is otherwise.

    A side is never shrunk below 1: with very few patches per tile (side <= max_grid / N) a
    thin map would otherwise round to zero columns, which bilinear resizing cannot produce
    (transformers' model fails there, so its count is no reference for that case).
    """
    height, width = shape
    ratio = math.sqrt(height * width / (max_crops * patches_per_side**2))
    if ratio > 1.1:
        return max(1, int(height // ratio)), max(1, int(width // ratio))
    return height, width
