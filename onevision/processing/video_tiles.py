"""Video pixels for the vision tower: every sampled frame resized straight to S x S.

LLaVA-OneVision encodes each frame at base resolution (arXiv 2408.03326, Sec. 3; the 196
tokens per frame come from pooling the features afterwards, not from the pixels). Frames
are resized with the same PIL filter on uint8 as images (aspect not kept) and normalised
once as a block.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from onevision.budget import VideoPlan
from onevision.processing.normalize import SIGLIP, ImageNormalization, normalize_tiles


def preprocess_video(
    frames: np.ndarray | torch.Tensor,
    plan: VideoPlan,
    image_size: int,
    normalization: ImageNormalization = SIGLIP,
) -> torch.Tensor:
    """Pixels of one video's sampled frames: uint8 [F, H, W, 3] -> float32 [F, 3, S, S].

    Args:
        frames: the frames the sampler picked for this plan, RGB, channels last.
        plan: the video's item plan; F must equal `plan.frames`.
        image_size: S, the vision tower's input side.
        normalization: the checkpoint's mean, std and resampling filter.

    Raises:
        ValueError: frames of the wrong dtype or shape, or a frame count other than the plan's.
    """
    return normalize_tiles(video_tiles(frames, plan, image_size, normalization.pil_filter), normalization)


def video_tiles(
    frames: np.ndarray | torch.Tensor, plan: VideoPlan, image_size: int, resample: Image.Resampling
) -> np.ndarray:
    """The uint8 tiles of `preprocess_video`, before normalisation: [F, 3, S, S]."""
    if isinstance(frames, torch.Tensor):
        frames = frames.numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB frames [F, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    if frames.shape[0] != plan.frames:
        raise ValueError(f"got {frames.shape[0]} frames but the video's plan has {plan.frames}")
    side = image_size
    tiles = np.empty((frames.shape[0], 3, side, side), dtype=np.uint8)
    for index, frame in enumerate(frames):
        if frame.shape[:2] == (side, side):
            tiles[index] = frame.transpose(2, 0, 1)
        else:
            resized = Image.fromarray(np.ascontiguousarray(frame)).resize((side, side), resample)
            tiles[index] = np.asarray(resized).transpose(2, 0, 1)
    return tiles
