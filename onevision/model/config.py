"""Typed model configs and the size presets: `debug`, `0.5b`, `7b`, `72b`.

`ModelConfig` is ours; `to_hf()` / `from_hf()` map it to and from transformers'
`LlavaOnevisionConfig`, the layout released checkpoints ship with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from onevision.budget import VisualSettings


@dataclass(frozen=True)
class VisionConfig:
    """SigLIP vision tower shape (transformers `SiglipVisionConfig` fields)."""

    hidden_size: int = 1152
    """Width of the tower."""
    intermediate_size: int = 4304
    """MLP width."""
    num_hidden_layers: int = 26
    """Encoder layers kept (the released models drop SigLIP's 27th)."""
    num_attention_heads: int = 16
    """Attention heads."""
    image_size: int = 384
    """Input side in pixels."""
    patch_size: int = 14
    """Patch side in pixels."""
    layer_norm_eps: float = 1e-6
    """LayerNorm epsilon."""


@dataclass(frozen=True)
class TextConfig:
    """Qwen2 decoder shape (transformers `Qwen2Config` fields)."""

    vocab_size: int = 152000
    """Rows of the embedding and LM head."""
    hidden_size: int = 896
    """Width of the decoder."""
    intermediate_size: int = 4864
    """MLP width."""
    num_hidden_layers: int = 24
    """Decoder layers."""
    num_attention_heads: int = 14
    """Query heads."""
    num_key_value_heads: int = 2
    """Key/value heads (grouped-query attention)."""
    max_position_embeddings: int = 32768
    """Longest sequence the rotary embedding is set up for."""
    rope_theta: float = 1000000.0
    """Rotary base."""
    rms_norm_eps: float = 1e-6
    """RMSNorm epsilon."""
    tie_word_embeddings: bool = False
    """Share the embedding matrix with the LM head."""


@dataclass(frozen=True)
class ModelConfig:
    """A LLaVA-OneVision model: SigLIP tower, 2-layer GELU projector, newline vector, Qwen2."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    """Vision tower shape."""
    text: TextConfig = field(default_factory=TextConfig)
    """Decoder shape."""
    vision_feature_layer: int = -1
    """Hidden state of the tower used as features (before post_layernorm); -1 = last kept layer."""
    projector_act: str = "gelu"
    """Activation between the projector's two linear layers."""
    image_token_id: int = 151646
    """Placeholder id an image's visual tokens replace."""
    video_token_id: int = 151647
    """Placeholder id a video's visual tokens replace."""
    visual: VisualSettings = field(default_factory=VisualSettings)
    """Default visual token settings (stages may override them)."""

    def __post_init__(self) -> None:
        if (self.visual.image_size, self.visual.patch_size) != (self.vision.image_size, self.vision.patch_size):
            object.__setattr__(
                self,
                "visual",
                dataclasses.replace(self.visual, image_size=self.vision.image_size, patch_size=self.vision.patch_size),
            )

    def to_hf(self):
        """The equivalent transformers `LlavaOnevisionConfig`."""
        from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

        vision = SiglipVisionConfig(**dataclasses.asdict(self.vision), vision_use_head=False)
        text = Qwen2Config(**dataclasses.asdict(self.text))
        return LlavaOnevisionConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=self.image_token_id,
            video_token_index=self.video_token_id,
            projector_hidden_act=self.projector_act,
            vision_feature_select_strategy="full",
            vision_feature_layer=self.vision_feature_layer,
            image_grid_pinpoints=[list(p) for p in self.visual.pinpoints()],
            vision_aspect_ratio=f"anyres_max_{self.visual.anyres_max}",
            tie_word_embeddings=self.text.tie_word_embeddings,
        )

    @classmethod
    def from_hf(cls, hf) -> "ModelConfig":
        """Read a transformers `LlavaOnevisionConfig` (or its dict form)."""
        if isinstance(hf, dict):
            from transformers import LlavaOnevisionConfig

            hf = LlavaOnevisionConfig(**hf)
        if hf.vision_feature_select_strategy != "full":
            raise ValueError(f"only vision_feature_select_strategy='full' is supported (SigLIP has no CLS), got {hf.vision_feature_select_strategy!r}")
        if not isinstance(hf.vision_feature_layer, int):
            raise ValueError(f"only a single vision_feature_layer is supported, got {hf.vision_feature_layer!r}")
        v, t = hf.vision_config, hf.text_config
        vision = VisionConfig(**{f.name: getattr(v, f.name) for f in dataclasses.fields(VisionConfig)})
        text_fields = {f.name: getattr(t, f.name, None) for f in dataclasses.fields(TextConfig)}
        if text_fields.get("rope_theta") is None:
            text_fields["rope_theta"] = (getattr(t, "rope_parameters", None) or {}).get("rope_theta", TextConfig.rope_theta)
        text_fields = {k: v for k, v in text_fields.items() if v is not None}
        anyres = str(hf.vision_aspect_ratio)
        visual = VisualSettings(
            image_size=vision.image_size,
            patch_size=vision.patch_size,
            anyres_max=int(anyres.removeprefix("anyres_max_")) if anyres.startswith("anyres_max_") else 9,
            grid_pinpoints=tuple(tuple(p) for p in hf.image_grid_pinpoints),
        )
        return cls(
            vision=vision,
            text=TextConfig(**text_fields),
            vision_feature_layer=hf.vision_feature_layer,
            projector_act=hf.projector_hidden_act,
            image_token_id=hf.image_token_index,
            video_token_id=hf.video_token_index,
            visual=visual,
        )


def _debug() -> ModelConfig:
    # 64 px images, 8 px patches -> 8x8 = 64 base tokens; pinpoints up to 3x3 crops.
    return ModelConfig(
        vision=VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=8),
        text=TextConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096),
        image_token_id=510,
        video_token_id=511,
        visual=VisualSettings(image_size=64, patch_size=8, anyres_max=4, max_grid=3, frames_upbound=8),
    )


SIGLIP_SO400M = VisionConfig()

PRESETS = {
    "debug": _debug,
    # Qwen2-0.5B ties its embedding and LM head (0.89B parameters with the tower).
    "0.5b": lambda: ModelConfig(vision=SIGLIP_SO400M, text=TextConfig(tie_word_embeddings=True)),
    "7b": lambda: ModelConfig(
        vision=SIGLIP_SO400M,
        text=TextConfig(vocab_size=152128, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4),
    ),
    "72b": lambda: ModelConfig(
        vision=SIGLIP_SO400M,
        text=TextConfig(vocab_size=152064, hidden_size=8192, intermediate_size=29568, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8),
    ),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A named size (`debug`, `0.5b`, `7b`, `72b`), optionally with top-level fields replaced."""
    try:
        config = PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown model size {name!r}; choose one of {sorted(PRESETS)}") from None
    return dataclasses.replace(config, **overrides) if overrides else config
