"""Pixels for the cross-attention family: an image and its tile plan -> normalised tiles.

    from onevision.budget.mllama_tiles import MllamaTileSettings, plan_mllama_image
    from onevision.processing.mllama import MLLAMA_NORMALIZATION, mllama_tiles, stack_mllama_images
    plan = plan_mllama_image(image.height, image.width, settings)
    tiles = mllama_tiles(image, plan, settings.tile_size, MLLAMA_NORMALIZATION)   # [plan.num_tiles, 3, T, T]
    batch = stack_mllama_images([[(tiles, plan)]], settings.max_num_tiles)        # pixel_values [B, N, max_tiles, 3, T, T], ...

What transformers 5.24's `MllamaImageProcessorPil` does, in the same order and arithmetic (the
tests compare bits): resize (PIL, uint8) to the plan's size, pad with zeros at the bottom and
right to the canvas of rows x cols tiles, rescale by 1/255 and normalise in float32 (so the
padding becomes -mean/std, not 0), then cut row-major into tiles. Missing tiles and missing
images of a batch are zeros, their aspect-ratio id 0 and mask 0, as there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from onevision.budget.mllama_tiles import MllamaImagePlan
from onevision.processing.normalize import ImageNormalization, normalize_tiles

MLLAMA_NORMALIZATION = ImageNormalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resample="bilinear")
"""transformers' `MllamaImageProcessorPil` defaults (ImageNet-standard 0.5 / 0.5, bilinear);
released checkpoints carry their own values in preprocessor_config.json
(`ImageNormalization.from_pretrained_dir`)."""


def mllama_tiles(
    image: Image.Image,
    plan: MllamaImagePlan,
    tile_size: int,
    normalization: ImageNormalization = MLLAMA_NORMALIZATION,
) -> torch.Tensor:
    """One image's tiles, float32 [plan.num_tiles, 3, tile_size, tile_size], row-major.

    Raises:
        ValueError: the image is not RGB or not the size the plan was made for.
    """
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode!r} ({image.width}x{image.height})")
    if (image.height, image.width) != (plan.height, plan.width):
        raise ValueError(f"image is {image.height}x{image.width} but the plan was made for {plan.height}x{plan.width}")
    height, width = plan.resized
    resized = np.asarray(image.resize((width, height), resample=normalization.pil_filter))
    canvas = np.zeros((plan.rows * tile_size, plan.cols * tile_size, 3), dtype=np.uint8)
    canvas[:height, :width] = resized
    # [rows*T, cols*T, 3] -> [rows, T, cols, T, 3] -> [rows, cols, 3, T, T] -> [tiles, 3, T, T]
    tiles = canvas.reshape(plan.rows, tile_size, plan.cols, tile_size, 3).transpose(0, 2, 4, 1, 3)
    return normalize_tiles(np.ascontiguousarray(tiles.reshape(plan.num_tiles, 3, tile_size, tile_size)), normalization)


@dataclass
class MllamaPixels:
    """The vision inputs of a batch, in transformers' shapes (N = most images in one row)."""

    pixel_values: torch.Tensor
    """float32 [B, N, max_num_tiles, 3, T, T]; zeros for missing tiles and images."""
    aspect_ratio_ids: torch.Tensor
    """int64 [B, N]; 0 for a missing image."""
    aspect_ratio_mask: torch.Tensor
    """int64 [B, N, max_num_tiles]; 1 for real tiles. Tile 0 of a missing image is 1 too, as in
    transformers (its vision encoder needs one unmasked tile per image slot)."""
    num_tiles: list[list[int]]
    """Real tiles of every image of every row, for the cross-attention mask."""


def stack_mllama_images(rows: Sequence[Sequence[tuple[torch.Tensor, MllamaImagePlan]]], max_num_tiles: int) -> MllamaPixels:
    """Stack every row's (tiles, plan) pairs into a padded batch.

    Raises:
        ValueError: no row has an image, tiles disagree with their plan, or a plan was made
            for another max_num_tiles.
    """
    count = max((len(row) for row in rows), default=0)
    if count == 0:
        raise ValueError("stack_mllama_images: no row has an image; call the model without pixel_values")
    first = rows[next(i for i, row in enumerate(rows) if row)][0][0]
    pixels = torch.zeros((len(rows), count, max_num_tiles, *first.shape[1:]), dtype=first.dtype)
    ids = torch.zeros((len(rows), count), dtype=torch.long)
    mask = torch.zeros((len(rows), count, max_num_tiles), dtype=torch.long)
    mask[:, :, 0] = 1
    num_tiles = []
    for b, row in enumerate(rows):
        for n, (tiles, plan) in enumerate(row):
            if plan.max_num_tiles != max_num_tiles:
                raise ValueError(f"row {b} image {n}: planned for max_num_tiles={plan.max_num_tiles}, stacking for {max_num_tiles}")
            if tiles.shape[0] != plan.num_tiles or tiles.shape[1:] != first.shape[1:]:
                raise ValueError(f"row {b} image {n}: tiles {tuple(tiles.shape)} but the plan has {plan.num_tiles} tiles of {tuple(first.shape[1:])}")
            pixels[b, n, : plan.num_tiles] = tiles
            ids[b, n] = plan.aspect_ratio_id
            mask[b, n] = torch.tensor(plan.aspect_ratio_mask)
        num_tiles.append([plan.num_tiles for _, plan in row])
    return MllamaPixels(pixels, ids, mask, num_tiles)
