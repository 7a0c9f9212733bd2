"""Shared helpers for model tests: a tiny config, transformers' twin of our model, inputs for both.

`model_pair(config)` builds transformers' `LlavaOnevisionForConditionalGeneration` from
`config.to_hf()` with a fixed seed and our `OneVisionModel` holding the same weights (keys
renamed by `onevision.checkpoint.hf`), so logits can be compared on the same media.
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlavaOnevisionForConditionalGeneration
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor

from onevision.budget import ImageMedia, VideoMedia, VisualSettings, plan_sample
from onevision.checkpoint.hf import hf_key_to_ours
from onevision.model.config import ModelConfig, TextConfig, VisionConfig
from onevision.model.onevision import OneVisionModel
from onevision.processing import preprocess_item
from onevision.visual_batch import VisualBatch

IMAGE_TOKEN = 126
VIDEO_TOKEN = 127


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run a test module on one intra-op thread: tiny models are all per-op overhead, and on a
    shared 2-core machine extra threads only wait for each other (25x slower measured here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(**overrides) -> ModelConfig:
    """32 px tiles, 8 px patches (4x4 = 16 base tokens), pinpoints up to 3x3 crops, AnyRes-Max-4.

    With N=4, grids of 2x3 crops or more trigger the AnyRes-Max downscale. Keyword arguments
    replace top-level `ModelConfig` fields (e.g. vision_feature_layer=-2, visual=...).
    """
    config = ModelConfig(
        vision=VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        text=TextConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048),
        image_token_id=IMAGE_TOKEN,
        video_token_id=VIDEO_TOKEN,
        visual=VisualSettings(image_size=32, patch_size=8, anyres_max=4, max_grid=3, frames_upbound=8),
    )
    return dataclasses.replace(config, **overrides) if overrides else config


def build_hf(config: ModelConfig, seed: int = 0) -> LlavaOnevisionForConditionalGeneration:
    """transformers' model for `config`, random weights from `seed`, fp32, eval mode."""
    hf_config = config.to_hf()
    hf_config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return LlavaOnevisionForConditionalGeneration(hf_config).eval()


def hf_to_ours_state_dict(hf_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename transformers' llava_onevision keys to ours with the checkpoint package's mapping."""
    out = {}
    for key, value in hf_state_dict.items():
        ours = hf_key_to_ours(key)
        if ours is None:
            raise KeyError(f"no mapping for transformers key {key!r}")
        out[ours] = value
    return out


def model_pair(config: ModelConfig, seed: int = 0) -> tuple[LlavaOnevisionForConditionalGeneration, OneVisionModel]:
    """(transformers model, our model) with identical weights, both fp32 and in eval mode."""
    hf = build_hf(config, seed)
    ours = OneVisionModel(config)
    ours.load_state_dict(hf_to_ours_state_dict(hf.state_dict()), strict=True)
    return hf, ours.eval()


def hf_image_processor(config: ModelConfig) -> LlavaOnevisionImageProcessorPil:
    """transformers' PIL image processor set up for the config's tile size and pinpoints, mean/std 0.5."""
    size = config.vision.image_size
    return LlavaOnevisionImageProcessorPil(
        size={"height": size, "width": size},
        image_grid_pinpoints=[list(p) for p in config.visual.pinpoints()],
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def hf_image_token_count(config: ModelConfig, width: int, height: int) -> int:
    """Placeholders transformers' `LlavaOnevisionProcessor` writes for one single image."""
    side = config.vision.image_size // config.vision.patch_size
    processor = types.SimpleNamespace(
        image_processor=types.SimpleNamespace(image_grid_pinpoints=[list(p) for p in config.visual.pinpoints()]),
        num_image_tokens=side * side,
        vision_aspect_ratio=f"anyres_max_{config.visual.anyres_max}",
    )
    processor._get_unpadded_features = types.MethodType(LlavaOnevisionProcessor._get_unpadded_features, processor)
    size = config.vision.image_size
    return LlavaOnevisionProcessor._get_number_of_features(processor, height, width, size, size)


def hf_video_token_count(config: ModelConfig, frames: int) -> int:
    """Placeholders transformers' `LlavaOnevisionProcessor` writes for a video of `frames` frames."""
    side = config.vision.image_size // config.vision.patch_size
    processor = types.SimpleNamespace(num_image_tokens=side * side, video_token="v")
    video_inputs = {"pixel_values_videos": [torch.zeros(frames, 3, 1, 1)]}
    return len(LlavaOnevisionProcessor.replace_video_token(processor, video_inputs, 0))


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB PIL image of random pixels."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def random_frames(frames: int, width: int = 40, height: int = 30, seed: int = 0) -> np.ndarray:
    """uint8 [F, H, W, 3] random video frames."""
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def video_pixels(frames: np.ndarray, size: int) -> torch.Tensor:
    """[F, 3, S, S]: frames resized straight to S x S (bicubic), scaled to [0, 1], normalised with 0.5/0.5."""
    tiles = [np.asarray(Image.fromarray(f).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0 for f in frames]
    return (torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2) - 0.5) / 0.5


def prompt_ids(runs: list[tuple[int, int]], seed: int = 0, vocab: int = 120) -> torch.Tensor:
    """1-D ids: random text tokens around placeholder runs.

    Args:
        runs: (placeholder id, count) per visual item, in order; text of 3 tokens before each,
            and 4 tokens after the last.
    """
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for token_id, count in runs:
        parts += [torch.randint(1, vocab, (3,), generator=gen), torch.full((count,), token_id)]
    parts.append(torch.randint(1, vocab, (4,), generator=gen))
    return torch.cat(parts)


class Sample:
    """One sample's inputs for both models: our VisualBatch and transformers' keyword arguments.

    Our pixels come from `onevision.processing`, transformers' from its PIL image processor
    (images) and `video_pixels` (frames), so parity covers preprocessing too.
    """

    def __init__(self, config: ModelConfig, images=(), video: np.ndarray | None = None, seed: int = 0):
        """images: PIL images of the sample (one -> AnyRes, several -> base size); video: uint8 [F, H, W, 3]."""
        media = [ImageMedia(*im.size) for im in images]
        if video is not None:
            media.append(VideoMedia(len(video)))
        self.plan = plan_sample(media, config.visual)
        size = config.vision.image_size
        self.hf_kwargs: dict = {}
        tiles = []
        for image, item in zip(images, self.plan.items):
            tiles.append(preprocess_item(image, item, size))
        if images:
            processed = hf_image_processor(config)([list(images)], return_tensors="pt")
            self.hf_kwargs.update(
                pixel_values=processed["pixel_values"],
                image_sizes=processed["image_sizes"],
                batch_num_images=processed["batch_num_images"],
            )
        if video is not None:
            frames = video[: self.plan.items[-1].frames]
            tiles.append(preprocess_item(frames, self.plan.items[-1], size))
            self.hf_kwargs["pixel_values_videos"] = video_pixels(frames, size)[None]
        self.visual = VisualBatch(torch.cat(tiles), list(self.plan.items)) if tiles else None
        runs = [(config.video_token_id if p.kind == "video" else config.image_token_id, p.tokens) for p in self.plan.items]
        self.input_ids = prompt_ids(runs, seed=seed)
