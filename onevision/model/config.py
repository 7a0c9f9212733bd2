"""Typed model configs and the size presets: OneVision `debug`, `0.5b`, `7b`, `72b`; LLaVA-1.5
`llava15-7b`, `llava15-13b`, `llava15-debug`; LLaVA v1 `llava-v1-7b`, `llava-v1-debug`.

One composition, interchangeable parts (`ModelConfig.vision_tower`, `text_model`,
`projector_type`, `vision_feature_layer`, `vision_feature_select_strategy`, `use_image_newline`):
LLaVA-OneVision is SigLIP + mlp2x_gelu + newline + Qwen2; LLaVA-1.5 and LLaVA v1 are CLIP
(class token dropped) + mlp2x_gelu / linear + Llama (Vicuna), without a newline.

`ModelConfig` is ours; `to_hf()` / `from_hf()` map it to and from transformers'
`LlavaOnevisionConfig`, the layout released checkpoints ship with; the LLaVA layouts are in
`onevision.checkpoint.llava_hf` and `onevision.checkpoint.llava_original`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from onevision.budget import VisualSettings


@dataclass(frozen=True)
class VisionConfig:
    """Vision tower shape (fields shared by transformers' `SiglipVisionConfig` and `CLIPVisionConfig`)."""

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
    """Decoder shape (transformers `Qwen2Config` fields; a Llama decoder uses those Llama shares)."""

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


VISION_TOWERS = ("siglip", "clip")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
"""transformers' attention implementations the model takes (training adds its packed kernels)."""
TEXT_MODELS = ("qwen2", "llama")
SELECT_STRATEGIES = ("full", "default")
_MLP = re.compile(r"^mlp(\d+)x_gelu$")


def projector_depth(projector_type: str) -> int:
    """Linear layers of a projector type: 'linear' -> 1, 'mlpNx_gelu' -> N (LLaVA's `build_vision_projector`).

    Raises:
        ValueError: any other name.
    """
    if projector_type == "linear":
        return 1
    match = _MLP.match(projector_type)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"projector_type must be 'linear' or 'mlpNx_gelu' (N >= 1), got {projector_type!r}")
    return int(match.group(1))


@dataclass(frozen=True)
class ModelConfig:
    """A LLaVA-family model: vision tower, projector, optional newline vector, decoder (OneVision by default)."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    """Vision tower shape."""
    text: TextConfig = field(default_factory=TextConfig)
    """Decoder shape."""
    vision_feature_layer: int | tuple[int, ...] = -1
    """Hidden state(s) of the tower used as features (before post_layernorm); -1 = last layer; several are concatenated on channels."""
    projector_act: str = "gelu"
    """Activation between the projector's linear layers."""
    image_token_id: int = 151646
    """Placeholder id an image's visual tokens replace."""
    video_token_id: int | None = 151647
    """Placeholder id a video's visual tokens replace; None = the model takes no video (LLaVA layouts)."""
    visual: VisualSettings = field(default_factory=VisualSettings)
    """Default visual token settings (stages may override them)."""
    vision_tower: str = "siglip"
    """Tower family: 'siglip' (transformers SiglipVisionModel) or 'clip' (CLIPVisionModel: class token, pre-layernorm)."""
    text_model: str = "qwen2"
    """Decoder family: 'qwen2' (Qwen2ForCausalLM) or 'llama' (LlamaForCausalLM, Vicuna)."""
    vision_feature_select_strategy: str = "full"
    """'full' keeps every token of the tower; 'default' drops CLIP's class token (LLaVA's 'patch')."""
    projector_type: str = "mlp2x_gelu"
    """'linear' (LLaVA v1) or 'mlpNx_gelu': N linear layers with `projector_act` between (LLaVA-1.5 / OneVision N=2)."""
    use_image_newline: bool = True
    """The learned `image_newline` vector exists and items carry newline tokens (LLaVA v1 / 1.5 have none)."""

    def __post_init__(self) -> None:
        layer = self.vision_feature_layer
        if isinstance(layer, list):
            object.__setattr__(self, "vision_feature_layer", tuple(layer))
        layers = self.feature_layers
        if not layers or not all(isinstance(v, int) and not isinstance(v, bool) for v in layers):
            raise ValueError(f"vision_feature_layer must be an int or a non-empty list of ints, got {layer!r}")
        for name, allowed in (
            ("vision_tower", VISION_TOWERS),
            ("text_model", TEXT_MODELS),
            ("vision_feature_select_strategy", SELECT_STRATEGIES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        projector_depth(self.projector_type)
        if self.vision_feature_select_strategy == "default" and self.vision_tower != "clip":
            raise ValueError(
                f"vision_feature_select_strategy 'default' drops a class token; the {self.vision_tower} tower has none (use 'full')"
            )
        if self.text_model == "llama" and (self.text.use_sliding_window or self.text.layer_types is not None):
            raise ValueError("a llama decoder has no sliding-window layers: text.use_sliding_window / text.layer_types are Qwen2's")
        # The planner needs the tower's geometry, its class token and the newline; they follow the model.
        derived = {
            "image_size": self.vision.image_size,
            "patch_size": self.vision.patch_size,
            "class_token": self.class_token,
            "image_newline": self.use_image_newline,
        }
        if any(getattr(self.visual, k) != v for k, v in derived.items()):
            object.__setattr__(self, "visual", dataclasses.replace(self.visual, **derived))

    @property
    def feature_layers(self) -> tuple[int, ...]:
        """`vision_feature_layer` as a tuple (one entry for one layer)."""
        layer = self.vision_feature_layer
        return (layer,) if isinstance(layer, int) else tuple(layer)

    @property
    def class_token(self) -> bool:
        """The tower's class token is among the visual tokens (CLIP with strategy 'full')."""
        return self.vision_tower == "clip" and self.vision_feature_select_strategy == "full"

    @property
    def is_onevision(self) -> bool:
        """The parts transformers' `llava_onevision` has: SigLIP, mlp2x, newline, Qwen2, one feature layer."""
        return (self.vision_tower, self.text_model, self.projector_type, self.use_image_newline) == (
            "siglip", "qwen2", "mlp2x_gelu", True,
        )

    def to_hf(self):
        """The equivalent transformers `LlavaOnevisionConfig`.

        Raises:
            ValueError: the model has parts llava_onevision does not (a CLIP tower, a Llama
                decoder, another projector, no newline); the LLaVA layouts live in
                `onevision.checkpoint.llava_hf` / `llava_original`.
        """
        from transformers import LlavaOnevisionConfig

        from onevision.model.onevision import qwen2_config
        from onevision.model.vision import siglip_config

        if not self.is_onevision:
            raise ValueError(
                "transformers' llava_onevision has SigLIP + mlp2x_gelu + image_newline + Qwen2; this model has "
                f"vision_tower={self.vision_tower!r}, projector_type={self.projector_type!r}, "
                f"use_image_newline={self.use_image_newline}, text_model={self.text_model!r}"
            )

        vision = siglip_config(self.vision, attn_implementation=None)
        text = qwen2_config(self.text, attn_implementation=None)
        return LlavaOnevisionConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=self.image_token_id,
            video_token_index=self.video_token_id,
            projector_hidden_act=self.projector_act,
            vision_feature_select_strategy="full",
            vision_feature_layer=self.vision_feature_layer if isinstance(self.vision_feature_layer, int) else list(self.vision_feature_layer),
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
CLIP_L14_336 = VisionConfig(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
    image_size=336, patch_size=14, layer_norm_eps=1e-5, hidden_act="quick_gelu",
)
"""openai/clip-vit-large-patch14-336: 24x24 = 576 patches (LLaVA-1.5)."""
CLIP_L14 = dataclasses.replace(CLIP_L14_336, image_size=224)
"""openai/clip-vit-large-patch14: 16x16 = 256 patches (LLaVA v1)."""
# Vicuna-7B v1.5 (Llama-2 shape); llava-hf adds <image> at 32000 and pads the rows to 32064.
VICUNA_7B = TextConfig(
    vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32, max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5,
)
VICUNA_13B = dataclasses.replace(
    VICUNA_7B, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40
)
# LLaVA v1 started from Vicuna-7B v0 / v1.1 (LLaMA-1 shape: 2048 positions, eps 1e-6).
VICUNA_7B_V1 = dataclasses.replace(VICUNA_7B, max_position_embeddings=2048, rms_norm_eps=1e-6)

# LLaVA: one image per sample at base resolution, no newline, no video (video_token_id None).
LLAVA15_VISUAL = VisualSettings(image_size=336, patch_size=14, single_image="base", base_image="pad", video_newline="none")
LLAVA_V1_VISUAL = dataclasses.replace(LLAVA15_VISUAL, image_size=224, base_image="crop")
_LLAVA = dict(
    vision_tower="clip", text_model="llama", vision_feature_layer=-2, vision_feature_select_strategy="default",
    use_image_newline=False, image_token_id=32000, video_token_id=None,
)


def _llava15(vision: VisionConfig, text: TextConfig, **extra) -> ModelConfig:
    return ModelConfig(vision=vision, text=text, projector_type="mlp2x_gelu", **{**_LLAVA, "visual": LLAVA15_VISUAL, **extra})


def _llava_v1(vision: VisionConfig, text: TextConfig, **extra) -> ModelConfig:
    return ModelConfig(vision=vision, text=text, projector_type="linear", **{**_LLAVA, "visual": LLAVA_V1_VISUAL, **extra})


_DEBUG_CLIP = VisionConfig(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
    layer_norm_eps=1e-5, hidden_act="quick_gelu",
)
_DEBUG_LLAMA = TextConfig(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=4, max_position_embeddings=2048, rope_theta=10000.0, rms_norm_eps=1e-5,
)

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
    "llava15-7b": lambda: _llava15(CLIP_L14_336, VICUNA_7B),
    "llava15-13b": lambda: _llava15(CLIP_L14_336, VICUNA_13B),
    # 32 px tiles, 8 px patches -> 4x4 = 16 tokens per image.
    "llava15-debug": lambda: _llava15(
        _DEBUG_CLIP, _DEBUG_LLAMA, image_token_id=510,
        visual=dataclasses.replace(LLAVA15_VISUAL, image_size=32, patch_size=8),
    ),
    "llava-v1-7b": lambda: _llava_v1(CLIP_L14, VICUNA_7B_V1),
    "llava-v1-debug": lambda: _llava_v1(
        _DEBUG_CLIP, _DEBUG_LLAMA, image_token_id=510,
        visual=dataclasses.replace(LLAVA_V1_VISUAL, image_size=32, patch_size=8),
    ),
}
"""Sizes by name. LLaVA-1.5: CLIP-L/14-336 (576 tokens), mlp2x_gelu, Vicuna; LLaVA v1: CLIP-L/14 at 224
(256 tokens), one linear layer, Vicuna; both take the penultimate CLIP layer without its class token."""


def preset(name: str, **overrides) -> ModelConfig:
    """A named size (`PRESETS`: `debug`, `0.5b`, `7b`, `72b`, `llava15-*`, `llava-v1-*`), optionally with top-level fields replaced."""
    try:
        config = PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown model size {name!r}; choose one of {sorted(PRESETS)}") from None
    return dataclasses.replace(config, **overrides) if overrides else config
