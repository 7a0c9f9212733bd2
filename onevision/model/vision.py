"""SigLIP vision tower: patch features from a chosen hidden layer, before `post_layernorm`.

LLaVA-OneVision (arXiv 2408.03326, Sec. 3) takes every patch token ("full" strategy; SigLIP
has no CLS token) from one hidden layer of the tower. The released models use the
second-to-last layer of SigLIP: the official code deletes the last layer, transformers keeps
26 layers and selects `vision_feature_layer=-1`. Either way the features are the encoder's
output at that depth, never the post-layernorm output.

`VisionTower` wraps transformers' `SiglipVisionModel` under the attribute `vision_model`, so
state-dict keys read `vision_tower.vision_model.*` (the layout released checkpoints ship).
Only the layers up to the feature layer are run: with layer -2 the last one is skipped, and
no list of all hidden states is kept.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from onevision.model.config import VisionConfig


def siglip_config(config: VisionConfig, attn_implementation: str = "sdpa") -> SiglipVisionConfig:
    """transformers' `SiglipVisionConfig` for our tower shape (no pooling head)."""
    return SiglipVisionConfig(
        **dataclasses.asdict(config), vision_use_head=False, attn_implementation=attn_implementation
    )


class VisionTower(nn.Module):
    """SigLIP encoder returning the patch features of one hidden layer.

    Args:
        config: tower shape.
        feature_layer: index into the tower's hidden states (0 = patch embeddings, i = after
            encoder layer i, negative counts from the end as in transformers: -1 = last layer).
        attn_implementation: 'sdpa', 'eager' or 'flash_attention_2'.
    """

    def __init__(self, config: VisionConfig, feature_layer: int = -1, attn_implementation: str = "sdpa"):
        super().__init__()
        num_layers = config.num_hidden_layers
        depth = feature_layer if feature_layer >= 0 else num_layers + 1 + feature_layer
        if not 0 <= depth <= num_layers:
            raise ValueError(
                f"vision_feature_layer {feature_layer} is outside the tower's hidden states "
                f"(0..{num_layers}, or -1..-{num_layers + 1})"
            )
        self.config = config
        self.feature_layer = feature_layer
        self.depth = depth
        """Encoder layers run to reach the feature layer."""
        self.vision_model = SiglipVisionModel(siglip_config(config, attn_implementation))

    @property
    def patches_per_side(self) -> int:
        return self.config.image_size // self.config.patch_size

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch features of the feature layer.

        Args:
            pixel_values: [N, 3, S, S] normalised tiles, S = image_size.

        Returns:
            [N, side*side, Dv] with side = image_size // patch_size, row-major patches.
        """
        size = self.config.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(f"vision tower expects pixel_values [N, 3, {size}, {size}], got {list(pixel_values.shape)}")
        model = self.vision_model
        hidden = model.embeddings(pixel_values.to(model.embeddings.patch_embedding.weight.dtype))
        # Each SiglipEncoderLayer is a GradientCheckpointingLayer: it checkpoints itself when
        # gradient checkpointing is enabled on `vision_model`, so running them here keeps that.
        for layer in model.encoder.layers[: self.depth]:
            hidden = layer(hidden, None)
        return hidden

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Same as `features`: [N, 3, S, S] -> [N, side*side, Dv]."""
        return self.features(pixel_values)
