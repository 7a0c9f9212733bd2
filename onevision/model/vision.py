"""Vision tower: features of one or several hidden layers of SigLIP or CLIP, before `post_layernorm`.

LLaVA-OneVision (arXiv 2408.03326, Sec. 3) takes every patch token ("full" strategy; SigLIP
has no CLS token) from one hidden layer of SigLIP. The released models use the second-to-last
layer: the official code deletes the last layer, transformers keeps 26 layers and selects
`vision_feature_layer=-1`. Either way the features are the encoder's output at that depth,
never the post-layernorm output.

LLaVA v1 / 1.5 (haotian-liu/LLaVA `clip_encoder.py`) take CLIP's `hidden_states[-2]`, the
class token dropped (`mm_vision_select_feature='patch'`, transformers' strategy 'default') or
kept ('cls_patch' / 'full'). CLIP's hidden state 0 is the embeddings after `pre_layrnorm`, as
transformers counts them. Several layers (transformers' `llava` / `llava_onevision` accept a
list) are concatenated on channels: [N, tokens, Dv * len(layers)].

`VisionTower` wraps transformers' `SiglipVisionModel` or `CLIPVisionModel` under the attribute
`vision_model`, so state-dict keys read `vision_tower.vision_model.*` (the layout released
checkpoints ship). Only the layers up to the deepest feature layer are run, and no list of all
hidden states is kept; the layers after it stay in the module (their weights load and save).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

from onevision.model.config import VisionConfig

TOWERS = ("siglip", "clip")


def siglip_config(config: VisionConfig, attn_implementation: str | None = "sdpa", head: bool = False) -> SiglipVisionConfig:
    """transformers' `SiglipVisionConfig` for our tower shape; the one place it is built.

    `head`: keep SigLIP's pooling head (contrastive pretraining; the towers here never use it).
    `attn_implementation` None leaves transformers' default (a config written to a file).
    """
    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    return SiglipVisionConfig(**dataclasses.asdict(config), vision_use_head=head, **extra)


def clip_config(config: VisionConfig, attn_implementation: str = "sdpa") -> CLIPVisionConfig:
    """transformers' `CLIPVisionConfig` for our tower shape."""
    return CLIPVisionConfig(**dataclasses.asdict(config), attn_implementation=attn_implementation)


def tower_config(kind: str, config: VisionConfig, attn_implementation: str = "sdpa"):
    """The transformers config of a 'siglip' or 'clip' tower."""
    if kind == "siglip":
        return siglip_config(config, attn_implementation)
    if kind == "clip":
        return clip_config(config, attn_implementation)
    raise ValueError(f"vision tower must be one of {TOWERS}, got {kind!r}")


def layer_depth(feature_layer: int, num_layers: int) -> int:
    """Encoder layers run to reach hidden state `feature_layer` (negative counts from the end).

    Raises:
        ValueError: the index is outside the tower's num_layers + 1 hidden states.
    """
    depth = feature_layer if feature_layer >= 0 else num_layers + 1 + feature_layer
    if not 0 <= depth <= num_layers:
        raise ValueError(
            f"vision_feature_layer {feature_layer} is outside the tower's hidden states "
            f"(0..{num_layers}, or -1..-{num_layers + 1})"
        )
    return depth


class VisionTower(nn.Module):
    """SigLIP or CLIP encoder returning the features of one or several hidden layers.

    Args:
        config: tower shape.
        feature_layer: index into the tower's hidden states (0 = embeddings, i = after encoder
            layer i, negative counts from the end as in transformers: -1 = last layer), or a
            sequence of them (concatenated on channels, in the order given).
        attn_implementation: 'sdpa', 'eager' or 'flash_attention_2'.
        kind: 'siglip' or 'clip'.
        drop_class_token: drop CLIP's class token (strategy 'default').
    """

    def __init__(
        self,
        config: VisionConfig,
        feature_layer: int | tuple[int, ...] = -1,
        attn_implementation: str = "sdpa",
        kind: str = "siglip",
        drop_class_token: bool = False,
    ):
        super().__init__()
        if drop_class_token and kind != "clip":
            raise ValueError(f"drop_class_token: the {kind} tower has no class token")
        layers = (feature_layer,) if isinstance(feature_layer, int) else tuple(feature_layer)
        self.config = config
        self.kind = kind
        self.feature_layer = feature_layer
        self.depths = tuple(layer_depth(layer, config.num_hidden_layers) for layer in layers)
        """Encoder layers run to reach each feature layer, in output order."""
        self.depth = max(self.depths)
        """Encoder layers run in all."""
        self.drop_class_token = drop_class_token
        model_class = SiglipVisionModel if kind == "siglip" else CLIPVisionModel
        self.vision_model = model_class(tower_config(kind, config, attn_implementation))

    @property
    def patches_per_side(self) -> int:
        return self.config.image_size // self.config.patch_size

    @property
    def out_width(self) -> int:
        """Channels of `features`: Dv per feature layer."""
        return self.config.hidden_size * len(self.depths)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Features of the feature layer(s).

        Args:
            pixel_values: [N, 3, S, S] normalised tiles, S = image_size.

        Returns:
            [N, tokens, Dv * layers]: tokens = side*side row-major patches (side = image_size //
            patch_size), after CLIP's class token when it is kept.
        """
        size = self.config.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(f"vision tower expects pixel_values [N, 3, {size}, {size}], got {list(pixel_values.shape)}")
        model = self.vision_model
        hidden = model.embeddings(pixel_values.to(model.embeddings.patch_embedding.weight.dtype))
        if self.kind == "clip":
            hidden = model.pre_layrnorm(hidden)
        # Only the feature layers' states are kept (transformers' output_hidden_states keeps
        # all 27: 2.9 GB for 32 frames at 384 px in fp32).
        wanted = set(self.depths)
        kept = {0: hidden} if 0 in wanted else {}
        # Each encoder layer is a GradientCheckpointingLayer: it checkpoints itself when
        # gradient checkpointing is enabled on `vision_model`, so running them here keeps that.
        for index, layer in enumerate(model.encoder.layers[: self.depth], start=1):
            hidden = layer(hidden, None)
            if index in wanted:
                kept[index] = hidden
        selected = [kept[d] for d in self.depths]
        if self.drop_class_token:
            selected = [h[:, 1:] for h in selected]
        return selected[0] if len(selected) == 1 else torch.cat(selected, dim=-1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Same as `features`: [N, 3, S, S] -> [N, tokens, Dv * layers]."""
        return self.features(pixel_values)
