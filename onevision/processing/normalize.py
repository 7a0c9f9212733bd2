"""Pixel normalisation of a checkpoint: mean, std and resampling filter, and the uint8 -> float step.

Every tile is cut and resized as uint8 and normalised once, as a stacked block, at the end:
rescale by 1/255, then (x - mean) / std per channel, in float32. The arithmetic is the one
transformers' PIL image processor performs (`rescale` upcasts to float64, multiplies by
1/255 and rounds to float32; `normalize` subtracts and divides in float32), and gives the
same bits: x / 255 computed in float32 rounds every uint8 value to the float32 that
float64(x) * (1/255) rounds to, which `tests/test_processing.py` checks for all 256 values.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# transformers stores the filter as PIL's integer code in preprocessor_config.json.
_RESAMPLE_NAMES = {int(member): member.name.lower() for member in Image.Resampling}

PREPROCESSOR_CONFIG = "preprocessor_config.json"


@dataclass(frozen=True)
class ImageNormalization:
    """How a checkpoint's vision tower expects its pixels (SigLIP by default)."""

    mean: tuple[float, float, float] = SIGLIP_MEAN
    """Per-channel mean (R, G, B) of pixels in [0, 1], subtracted after rescaling by 1/255."""
    std: tuple[float, float, float] = SIGLIP_STD
    """Per-channel standard deviation (R, G, B) the centred pixels are divided by."""
    resample: str = "bicubic"
    """PIL resampling filter for every resize: nearest, box, bilinear, hamming, bicubic or lanczos."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (R, G, B), got mean={self.mean} std={self.std}")
        if any(v <= 0 for v in self.std):
            raise ValueError(f"std values must be positive, got {self.std}")
        if self.resample not in _RESAMPLE_NAMES.values():
            raise ValueError(f"unknown resample filter {self.resample!r}; choose one of {sorted(_RESAMPLE_NAMES.values())}")

    @property
    def pil_filter(self) -> Image.Resampling:
        """The PIL constant for `resample`."""
        return Image.Resampling[self.resample.upper()]

    @property
    def background(self) -> tuple[int, int, int]:
        """The mean colour in 0-255, the padding colour of pad-to-square (truncated like transformers)."""
        return tuple(int(v * 255) for v in self.mean)

    @classmethod
    def from_pretrained_dir(cls, path: str | os.PathLike) -> "ImageNormalization":
        """Read `image_mean`, `image_std` and `resample` from `path`/preprocessor_config.json.

        A directory without that file (our own checkpoints carry SigLIP's values implicitly)
        gives the SigLIP default; keys missing from the file keep their defaults too.

        Raises:
            ValueError: the file is not valid JSON or holds values of the wrong shape; the
                message names the file.
        """
        config_path = os.path.join(os.fspath(path), PREPROCESSOR_CONFIG)
        if not os.path.isfile(config_path):
            return cls()
        try:
            with open(config_path, encoding="utf-8") as handle:
                data = json.load(handle)
            kwargs = {}
            if "image_mean" in data:
                kwargs["mean"] = _three(data["image_mean"], "image_mean")
            if "image_std" in data:
                kwargs["std"] = _three(data["image_std"], "image_std")
            if "resample" in data:
                resample = data["resample"]
                kwargs["resample"] = _RESAMPLE_NAMES.get(resample, resample) if isinstance(resample, int) else str(resample).lower()
            return cls(**kwargs)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{config_path}: {error}") from None


SIGLIP = ImageNormalization()
"""SigLIP's normalisation (mean 0.5, std 0.5, bicubic), what the released checkpoints use."""
CLIP = ImageNormalization(mean=CLIP_MEAN, std=CLIP_STD)
"""OpenAI CLIP's normalisation (bicubic), what LLaVA v1 / 1.5 use; pad colour int(mean * 255) = (122, 116, 104)."""
TOWER_NORMALIZATION = {"siglip": SIGLIP, "clip": CLIP}
"""The normalisation of each vision tower family (`ModelConfig.vision_tower`), for models built without a folder."""


def _three(value, name: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ValueError(f"{name} must be a number or 3 numbers, got {value!r}")
    return tuple(float(v) for v in value)


def normalize_tiles(tiles: np.ndarray | torch.Tensor, normalization: ImageNormalization) -> torch.Tensor:
    """uint8 tiles [T, 3, S, S] -> float32 [T, 3, S, S]: x / 255, then (x - mean) / std per channel.

    Bit-identical to transformers' `rescale` + `normalize` (see the module docstring). Done in
    numpy, in place, on one thread: torch's thread pool costs more than it saves on blocks of
    this size inside data workers that share their cores.
    """
    if isinstance(tiles, torch.Tensor):
        tiles = tiles.numpy()
    if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[1] != 3:
        raise ValueError(f"expected uint8 tiles [T, 3, S, S], got {tiles.dtype} {tuple(tiles.shape)}")
    out = np.divide(tiles, np.float32(255), dtype=np.float32)
    np.subtract(out, np.array(normalization.mean, np.float32).reshape(1, 3, 1, 1), out=out)
    np.divide(out, np.array(normalization.std, np.float32).reshape(1, 3, 1, 1), out=out)
    return torch.from_numpy(out)
