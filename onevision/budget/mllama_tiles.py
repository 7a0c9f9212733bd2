"""Tile and token plans for the cross-attention family (Llama 3.2-Vision, transformers `mllama`).

Pure geometry, like the AnyRes planner: a data worker plans a sample from image sizes alone.

An image is resized onto the best canvas of whole tiles (at most `max_num_tiles`, arranged
as any rows x cols with rows * cols <= max_num_tiles), padded to that canvas, and cut into
tiles of `tile_size`; the aspect-ratio id is the arrangement's 1-based index in the
supported list (0 pads missing images). The decoder sees one `<|image|>` token per image;
the image's tiles reach it only through the cross-attention layers, as
(tile_size // patch_size)^2 + 1 (class token) keys per tile. The two counts are kept apart
and both are checked against the sample's budget.

Follows transformers 5.24 `models/mllama/image_processing_pil_mllama.py`
(`get_all_supported_aspect_ratios`, `get_optimal_tiled_canvas`,
`get_image_size_fit_to_canvas`, `convert_aspect_ratios_to_ids_np`,
`build_aspect_ratio_mask_np`), in plain Python floats (the same IEEE doubles numpy uses, so
ties resolve the same way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from onevision.budget.planner import BudgetError


@dataclass(frozen=True)
class MllamaTileSettings:
    """How images become tiles for the cross-attention family."""

    tile_size: int = 560
    """Side of one tile in pixels (the vision config's image_size; 560 in Llama 3.2-Vision)."""
    patch_size: int = 14
    """Vision encoder patch size; (tile_size // patch_size)^2 patches per tile."""
    max_num_tiles: int = 4
    """Most tiles one image is cut into (the vision config's max_num_tiles)."""

    def __post_init__(self) -> None:
        for name in ("tile_size", "patch_size", "max_num_tiles"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"MllamaTileSettings.{name}={value!r}: must be a positive int")
        if self.tile_size % self.patch_size:
            raise ValueError(f"MllamaTileSettings: tile_size={self.tile_size} is not a multiple of patch_size={self.patch_size}")

    @property
    def tokens_per_tile(self) -> int:
        """Cross-attention keys one tile gives: its patches plus the class token."""
        return (self.tile_size // self.patch_size) ** 2 + 1


@lru_cache(maxsize=16)
def supported_aspect_ratios(max_num_tiles: int) -> tuple[tuple[int, int], ...]:
    """Every (rows, cols) with rows * cols <= max_num_tiles, in transformers' order.

    transformers' docstring calls the pairs (width, height); its canvas code reads the first
    as the height, and so do we: (1, 2) is one row of two tiles (a wide image).
    """
    return tuple((a, b) for a in range(1, max_num_tiles + 1) for b in range(1, max_num_tiles + 1) if a * b <= max_num_tiles)


def optimal_tiled_canvas(height: int, width: int, max_num_tiles: int, tile_size: int) -> tuple[int, int]:
    """(canvas height, canvas width) in pixels: the smallest upscale >= 1, else the largest downscale.

    Per arrangement the scale is min(canvas_h / height, canvas_w / width); among equal scales
    the smallest canvas area wins (the first one listed on a tie of areas).
    """
    canvases = [(rows * tile_size, cols * tile_size) for rows, cols in supported_aspect_ratios(max_num_tiles)]
    scales = [min(ch / height, cw / width) for ch, cw in canvases]
    up = [s for s in scales if s >= 1]
    chosen = min(up) if up else max(scales)
    candidates = [c for c, s in zip(canvases, scales) if s == chosen]
    return min(candidates, key=lambda c: c[0] * c[1])


def size_fit_to_canvas(height: int, width: int, canvas_height: int, canvas_width: int, tile_size: int) -> tuple[int, int]:
    """(height, width) the image is resized to: aspect kept, each side within [tile_size, canvas]."""
    target_w = min(max(width, tile_size), canvas_width)
    target_h = min(max(height, tile_size), canvas_height)
    scale_h, scale_w = target_h / height, target_w / width
    if scale_w < scale_h:
        return min(math.floor(height * scale_w) or 1, target_h), target_w
    return target_h, min(math.floor(width * scale_h) or 1, target_w)


@dataclass(frozen=True)
class MllamaImagePlan:
    """Where one image's pixels go and what it costs."""

    height: int
    width: int
    resized: tuple[int, int]
    """(height, width) after the aspect-preserving resize, before padding to the canvas."""
    rows: int
    """Tile rows of the canvas."""
    cols: int
    """Tile columns of the canvas."""
    aspect_ratio_id: int
    """1-based index of (rows, cols) in `supported_aspect_ratios(max_num_tiles)`."""
    max_num_tiles: int
    tokens_per_tile: int

    @property
    def num_tiles(self) -> int:
        return self.rows * self.cols

    @property
    def aspect_ratio_mask(self) -> tuple[int, ...]:
        """1 for each real tile, 0 for the padding tiles up to max_num_tiles."""
        return tuple(1 if i < self.num_tiles else 0 for i in range(self.max_num_tiles))

    @property
    def cross_attention_tokens(self) -> int:
        """Keys the decoder's cross-attention can see for this image (real tiles only)."""
        return self.num_tiles * self.tokens_per_tile


def plan_mllama_image(height: int, width: int, settings: MllamaTileSettings) -> MllamaImagePlan:
    """The tile plan of one `height` x `width` image.

    Raises:
        ValueError: a side is not a positive int.
    """
    if not all(isinstance(v, int) and v > 0 for v in (height, width)):
        raise ValueError(f"image size {height}x{width}: both sides must be positive ints")
    canvas_h, canvas_w = optimal_tiled_canvas(height, width, settings.max_num_tiles, settings.tile_size)
    rows, cols = canvas_h // settings.tile_size, canvas_w // settings.tile_size
    return MllamaImagePlan(
        height=height,
        width=width,
        resized=size_fit_to_canvas(height, width, canvas_h, canvas_w, settings.tile_size),
        rows=rows,
        cols=cols,
        aspect_ratio_id=supported_aspect_ratios(settings.max_num_tiles).index((rows, cols)) + 1,
        max_num_tiles=settings.max_num_tiles,
        tokens_per_tile=settings.tokens_per_tile,
    )


@dataclass(frozen=True)
class MllamaBudget:
    """Per-sample ceilings; None leaves a count unchecked."""

    max_decoder_tokens: int | None = None
    """Decoder positions: text tokens including one `<|image|>` per image."""
    max_cross_attention_tokens: int | None = None
    """Cross-attention keys: tokens_per_tile for every real tile of every image."""


@dataclass(frozen=True)
class MllamaSamplePlan:
    """One sample's images and its two token counts."""

    images: tuple[MllamaImagePlan, ...]
    decoder_tokens: int
    cross_attention_tokens: int

    @property
    def num_tiles(self) -> list[int]:
        return [image.num_tiles for image in self.images]


def plan_mllama_sample(
    image_sizes: Sequence[tuple[int, int]],
    text_tokens: int,
    settings: MllamaTileSettings,
    budget: MllamaBudget = MllamaBudget(),
    where: str = "sample",
) -> MllamaSamplePlan:
    """Plan a sample of `text_tokens` non-image tokens and images of (height, width) `image_sizes`.

    The decoder count is text_tokens + one `<|image|>` per image; the cross-attention count
    sums the images' real tiles times tokens_per_tile.

    Raises:
        BudgetError: either count exceeds its ceiling; the message names both counts and both
            ceilings, prefixed by `where`.
    """
    images = tuple(plan_mllama_image(h, w, settings) for h, w in image_sizes)
    plan = MllamaSamplePlan(
        images=images,
        decoder_tokens=text_tokens + len(images),
        cross_attention_tokens=sum(image.cross_attention_tokens for image in images),
    )
    over_decoder = budget.max_decoder_tokens is not None and plan.decoder_tokens > budget.max_decoder_tokens
    over_cross = budget.max_cross_attention_tokens is not None and plan.cross_attention_tokens > budget.max_cross_attention_tokens
    if over_decoder or over_cross:
        raise BudgetError(
            f"{where}: {plan.decoder_tokens} decoder tokens (budget {budget.max_decoder_tokens}) and "
            f"{plan.cross_attention_tokens} cross-attention tokens in {sum(plan.num_tiles)} tiles "
            f"(budget {budget.max_cross_attention_tokens}): "
            + " and ".join(name for name, over in (("decoder", over_decoder), ("cross-attention", over_cross)) if over)
            + " over budget"
        )
    return plan
