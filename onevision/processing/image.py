"""Image pixels for the vision tower, cut exactly as the item's plan says.

Two layouts (arXiv 2408.03326, Sec. 3; docs/architecture.md, "Visual token budget"):

- a single image (`AnyResPlan`): the base view, the whole image resized straight to S x S
  (aspect not kept), then the crops: the image resized keeping its aspect into the plan's
  best resolution, centred on a zero (black) canvas of that resolution, and cut into S x S
  crops row-major. Output [1 + rows * cols, 3, S, S].
- one image of a multi-image sample (`BaseImagePlan`): padded to a square with the mean
  colour, resized to S x S (`plan.fill == 'pad'`), or resized straight to S x S ('stretch',
  LLaVA-NeXT's `process_images` for image_aspect_ratio 'square'), or its shortest side resized
  to S (the other to int(S * long / short)) and centre-cropped ('crop': LLaVA v1 and transformers'
  CLIPImageProcessor / LlavaImageProcessor without do_pad). Output [1, 3, S, S].

The pixels are those of transformers' `LlavaOnevisionImageProcessorPil` (resize sizes and
rounding, PIL filter on uint8, padding value, crop order, normalisation), bit for bit; the
work is arranged to do less of it: every resize runs once, on the PIL image, in uint8
(the reference converts to numpy and back around each resize and resizes every crop again
to the size it already has), crops are numpy views of the padded canvas copied once into a
uint8 block, and that block is normalised in one pass (see `normalize.py`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from onevision.budget import AnyResPlan, BaseImagePlan
from onevision.processing.normalize import SIGLIP, ImageNormalization, normalize_tiles


def preprocess_image(
    image: Image.Image,
    plan: AnyResPlan | BaseImagePlan,
    image_size: int,
    normalization: ImageNormalization = SIGLIP,
) -> torch.Tensor:
    """Pixels of one image for its plan: float32 [plan.num_tiles, 3, S, S], S = `image_size`.

    Args:
        image: an RGB PIL image of the size the plan was made for.
        plan: the image's item plan from `onevision.budget.plan_sample`.
        image_size: S, the vision tower's input side (`VisualSettings.image_size`).
        normalization: the checkpoint's mean, std and resampling filter.

    Raises:
        ValueError: the image is not RGB, or its size or the plan's grid disagree with the plan
            or with `image_size`; the message gives the numbers.
    """
    return normalize_tiles(image_tiles(image, plan, image_size, normalization), normalization)


def image_tiles(
    image: Image.Image,
    plan: AnyResPlan | BaseImagePlan,
    image_size: int,
    normalization: ImageNormalization = SIGLIP,
) -> np.ndarray:
    """The uint8 tiles of `preprocess_image`, before normalisation: [plan.num_tiles, 3, S, S]."""
    _check_image(image, plan)
    if isinstance(plan, AnyResPlan):
        return anyres_tiles(image, plan, image_size, normalization.pil_filter)
    if isinstance(plan, BaseImagePlan):
        if plan.fill == "stretch":
            return np.ascontiguousarray(_resized(image, image_size, image_size, normalization.pil_filter).transpose(2, 0, 1))[None]
        if plan.fill == "crop":
            return crop_tile(image, image_size, normalization.pil_filter)[None]
        return square_tile(image, image_size, normalization.background, normalization.pil_filter)[None]
    raise TypeError(f"an image needs an AnyResPlan or BaseImagePlan, got {type(plan).__name__}")


def anyres_tiles(image: Image.Image, plan: AnyResPlan, image_size: int, resample: Image.Resampling) -> np.ndarray:
    """Base view then row-major crops, uint8 [1 + rows * cols, 3, S, S]."""
    side = image_size
    rows, cols = plan.grid
    best_height, best_width = plan.best_resolution
    if (best_height, best_width) != (rows * side, cols * side):
        raise ValueError(
            f"plan's best resolution {best_height}x{best_width} (h x w) is not its grid {rows}x{cols} of "
            f"{side} px crops; grid pinpoints must be multiples of image_size={side}"
        )
    new_height, new_width = patch_output_size((image.height, image.width), plan.best_resolution)
    top, left = (best_height - new_height) // 2, (best_width - new_width) // 2

    tiles = np.empty((1 + rows * cols, 3, side, side), dtype=np.uint8)
    tiles[0] = _resized(image, side, side, resample).transpose(2, 0, 1)
    canvas = np.zeros((best_height, best_width, 3), dtype=np.uint8)
    canvas[top : top + new_height, left : left + new_width] = _resized(image, new_width, new_height, resample)
    # [rows*S, cols*S, 3] -> [rows, cols, 3, S, S]: crop (r, c) is canvas[r*S:(r+1)*S, c*S:(c+1)*S].
    crops = canvas.reshape(rows, side, cols, side, 3).transpose(0, 2, 4, 1, 3)
    tiles[1:].reshape(rows, cols, 3, side, side)[...] = crops
    return tiles


def square_tile(
    image: Image.Image, image_size: int, background: tuple[int, int, int], resample: Image.Resampling
) -> np.ndarray:
    """Pad to a square of the longer side with `background`, centred, then resize: uint8 [3, S, S]."""
    width, height = image.size
    if width != height:
        longest = max(width, height)
        canvas = Image.new("RGB", (longest, longest), background)
        canvas.paste(image, ((longest - width) // 2, (longest - height) // 2))
        image = canvas
    return np.ascontiguousarray(_resized(image, image_size, image_size, resample).transpose(2, 0, 1))


def crop_tile(image: Image.Image, image_size: int, resample: Image.Resampling) -> np.ndarray:
    """Shortest side resized to S, the other to int(S * long / short), then the centre S x S: uint8 [3, S, S].

    transformers' `get_resize_output_image_size(default_to_square=False)` and `center_crop`
    (top = (h - S) // 2, left = (w - S) // 2), as CLIPImageProcessor applies them.
    """
    width, height = image.size
    short, long = min(width, height), max(width, height)
    other = int(image_size * long / short)
    new_width, new_height = (image_size, other) if width <= height else (other, image_size)
    resized = _resized(image, new_width, new_height, resample)
    top, left = (new_height - image_size) // 2, (new_width - image_size) // 2
    return np.ascontiguousarray(resized[top : top + image_size, left : left + image_size].transpose(2, 0, 1))


def patch_output_size(original: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """(height, width) of an aspect-preserving resize of `original` into `target`, both (h, w).

    The side with the smaller scale fills the target; the other is rounded up, capped at the
    target (transformers' `get_patch_output_size`).
    """
    original_height, original_width = original
    target_height, target_width = target
    scale_w = target_width / original_width
    scale_h = target_height / original_height
    if scale_w < scale_h:
        return min(math.ceil(original_height * scale_w), target_height), target_width
    return target_height, min(math.ceil(original_width * scale_h), target_width)


def _resized(image: Image.Image, width: int, height: int, resample: Image.Resampling) -> np.ndarray:
    """uint8 [height, width, 3]; PIL returns a plain copy when the size already matches."""
    return np.asarray(image.resize((width, height), resample))


def _check_image(image: Image.Image, plan: AnyResPlan | BaseImagePlan) -> None:
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode!r} ({image.width}x{image.height})")
    if (image.width, image.height) != (plan.width, plan.height):
        raise ValueError(
            f"image is {image.width}x{image.height} (width x height) but its plan was made for "
            f"{plan.width}x{plan.height}"
        )
