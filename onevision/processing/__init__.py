"""Pixel preprocessing: decoded images and frames -> normalised tiles laid out per item plan.

    from onevision.processing import ImageNormalization, preprocess_image, preprocess_video
    norm = ImageNormalization.from_pretrained_dir(checkpoint_dir)   # SigLIP 0.5/0.5 if absent
    pixels = preprocess_image(rgb_image, plan.items[0], settings.image_size, norm)
    pixels.shape  # [plan.items[0].num_tiles, 3, S, S]

`preprocess_item` dispatches on the plan's kind, so a data worker can turn a whole
`SamplePlan` into the `pixel_values` of a `VisualBatch` item after item.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from onevision.budget import AnyResPlan, BaseImagePlan, VideoPlan
from onevision.processing.image import (
    anyres_tiles,
    image_tiles,
    patch_output_size,
    preprocess_image,
    square_tile,
)
from onevision.processing.normalize import CLIP, SIGLIP, TOWER_NORMALIZATION, ImageNormalization, normalize_tiles
from onevision.processing.video_tiles import preprocess_video, video_tiles


def preprocess_item(
    media: Image.Image | np.ndarray | torch.Tensor,
    plan: AnyResPlan | BaseImagePlan | VideoPlan,
    image_size: int,
    normalization: ImageNormalization = SIGLIP,
) -> torch.Tensor:
    """One item's pixels [plan.num_tiles, 3, S, S]: an image for image plans, frames for a video plan."""
    if isinstance(plan, VideoPlan):
        return preprocess_video(media, plan, image_size, normalization)
    return preprocess_image(media, plan, image_size, normalization)


__all__ = [
    "CLIP",
    "SIGLIP",
    "TOWER_NORMALIZATION",
    "ImageNormalization",
    "anyres_tiles",
    "image_tiles",
    "normalize_tiles",
    "patch_output_size",
    "preprocess_image",
    "preprocess_item",
    "preprocess_video",
    "square_tile",
    "video_tiles",
]
