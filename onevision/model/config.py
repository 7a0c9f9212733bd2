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
    hidden_act: str = "gelu_pytorch_tanh"
    """MLP activation (a name in transformers' ACT2FN)."""
    attention_dropout: float = 0.0
    """Dropout on attention weights while training."""


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
    hidden_act: str = "silu"
    """MLP activation (a name in transformers' ACT2FN)."""
    rope_scaling: dict | None = None
    """Every `rope_parameters` entry but rope_theta (rope_type, factor, ...), as transformers reads them; None = plain RoPE."""
    use_sliding_window: bool = False
    """Sliding-window attention in the layers from max_window_layers on."""
    sliding_window: int | None = None
    """Window size in tokens when use_sliding_window."""
    max_window_layers: int = 28
    """First layer that uses the sliding window."""
    layer_types: list[str] | None = None
    """Explicit 'full_attention' / 'sliding_attention' per layer; None = derived from the three fields above."""
    attention_dropout: float = 0.0
    """Dropout on attention weights while training."""
    pad_token_id: int | None = None
    """Embedding row kept at its value (no gradient) as nn.Embedding's padding_idx, as Qwen2 does."""

    def __post_init__(self) -> None:
        if self.use_sliding_window and not self.sliding_window:
            raise ValueError("use_sliding_window needs sliding_window (a window size in tokens)")
        if self.rope_scaling is not None and "rope_theta" in self.rope_scaling:
            raise ValueError("rope_scaling holds rope_theta; set TextConfig.rope_theta instead")
        if self.layer_types is not None and len(self.layer_types) != self.num_hidden_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers")


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
        """Read a transformers `LlavaOnevisionConfig` (or its dict form).

        Every field is honoured, refused or inert as `onevision.model.hf_fields` lists it.

        Raises:
            ValueError: a field holds a value we cannot honour; the message names it.
        """
        from onevision.model.hf_fields import check_llava, text_from_hf, vision_from_hf

        if isinstance(hf, dict):
            from transformers import LlavaOnevisionConfig

            hf = LlavaOnevisionConfig(**hf)
        check_llava(hf)
        vision = vision_from_hf(hf.vision_config)
        # LlavaOnevisionConfig ties when either the top level or text_config says so.
        text = dataclasses.replace(text_from_hf(hf.text_config), tie_word_embeddings=bool(hf.tie_word_embeddings))
        anyres = str(hf.vision_aspect_ratio)
        visual = VisualSettings(
            image_size=vision.image_size,
            patch_size=vision.patch_size,
            anyres_max=int(anyres.removeprefix("anyres_max_")),
            grid_pinpoints=tuple(tuple(p) for p in hf.image_grid_pinpoints),
        )
        return cls(
            vision=vision,
            text=text,
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
