"""Typed configs, size presets and the sorted transformers fields of the cross-attention family.

`MllamaModelConfig` is the serialised form of transformers' `MllamaConfig` that we build
`MllamaVLM` from (onevision/model/mllama.py). Every field of the installed `MllamaConfig`,
`MllamaTextConfig` and `MllamaVisionConfig` is

- honoured: a field of our dataclasses, handed back to transformers by the same name, so it
  acts exactly as in transformers (the modules are transformers' own);
- refused: we support one value only, or (`*_CONSTRAINTS`, on honoured fields) some values
  only; another raises `ValueError` naming the field;
- inert: cannot change tiles, tokens or logits; each carries a one-line reason.

tests/test_mllama_fields.py enumerates the installed transformers' fields and fails on one that
is in none of the lists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from transformers import MllamaConfig

from onevision.budget.mllama_tiles import MllamaTileSettings, supported_aspect_ratios
from onevision.model.hf_fields import COMMON_INERT, warn_unknown


@dataclass(frozen=True)
class MllamaTextSettings:
    """The Llama decoder with interleaved cross-attention layers (transformers `MllamaTextConfig`)."""

    vocab_size: int = 128256
    """Rows of the LM head; the embedding holds 8 more (the image token lives there)."""
    hidden_size: int = 4096
    """Decoder width."""
    hidden_act: str = "silu"
    """MLP activation."""
    num_hidden_layers: int = 40
    """All decoder layers, cross-attention layers included."""
    num_attention_heads: int = 32
    """Query heads (self- and cross-attention)."""
    num_key_value_heads: int = 8
    """Key/value heads (grouped-query attention)."""
    intermediate_size: int = 14336
    """MLP hidden width."""
    rope_parameters: dict | None = None
    """transformers' RoPE block (rope_type, rope_theta, llama3 scaling...); None = default, theta 500000."""
    rms_norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    max_position_embeddings: int = 131072
    """Longest sequence RoPE is set up for."""
    cross_attention_layers: tuple[int, ...] = (3, 8, 13, 18, 23, 28, 33, 38)
    """Indices (into the layer list) of the gated cross-attention layers."""
    dropout: float = 0.0
    """Attention dropout while training."""
    bos_token_id: int = 128000
    """`<|begin_of_text|>`."""
    eos_token_id: int | tuple[int, ...] | None = 128001
    """End of text (one id or several)."""
    pad_token_id: int | None = 128004
    """Padding id (the embedding's padding_idx)."""


@dataclass(frozen=True)
class MllamaVisionSettings:
    """The tiled vision encoder plus gated global encoder (transformers `MllamaVisionConfig`)."""

    hidden_size: int = 1280
    """Encoder width."""
    hidden_act: str = "gelu"
    """Encoder MLP activation."""
    num_hidden_layers: int = 32
    """Layers of the per-tile encoder."""
    num_global_layers: int = 8
    """Layers of the gated global encoder over all tiles of an image."""
    attention_heads: int = 16
    """Attention heads."""
    intermediate_size: int = 5120
    """Encoder MLP width."""
    vision_output_dim: int = 7680
    """Feature width: hidden_size * (1 + len(intermediate_layers_indices))."""
    image_size: int = 560
    """Tile side in pixels."""
    patch_size: int = 14
    """Patch side in pixels."""
    norm_eps: float = 1e-5
    """LayerNorm epsilon of the encoder layers."""
    max_num_tiles: int = 4
    """Most tiles per image."""
    intermediate_layers_indices: tuple[int, ...] = (3, 7, 15, 23, 30)
    """Encoder layers whose outputs are concatenated with the final one."""


@dataclass(frozen=True)
class MllamaModelConfig:
    """The whole cross-attention model; `to_hf()` is transformers' `MllamaConfig`."""

    text: MllamaTextSettings = field(default_factory=MllamaTextSettings)
    vision: MllamaVisionSettings = field(default_factory=MllamaVisionSettings)
    image_token_id: int = 128256
    """Id of `<|image|>` (beyond the LM head's rows in the released tokenizer)."""

    def tiles(self) -> MllamaTileSettings:
        """The planner's settings for this model's encoder."""
        return MllamaTileSettings(self.vision.image_size, self.vision.patch_size, self.vision.max_num_tiles)

    def to_hf(self) -> MllamaConfig:
        text = dataclasses.asdict(self.text)
        text["cross_attention_layers"] = list(text["cross_attention_layers"])
        if isinstance(text["eos_token_id"], tuple):
            text["eos_token_id"] = list(text["eos_token_id"])
        vision = dataclasses.asdict(self.vision)
        vision["intermediate_layers_indices"] = list(vision["intermediate_layers_indices"])
        vision["supported_aspect_ratios"] = [list(r) for r in supported_aspect_ratios(self.vision.max_num_tiles)]
        config = MllamaConfig(text_config=text, vision_config=vision, image_token_index=self.image_token_id)
        config._attn_implementation = "sdpa"
        return config

    @classmethod
    def from_hf(cls, hf: MllamaConfig, where: str = "") -> "MllamaModelConfig":
        """Ours from transformers' config, every field honoured or refused by name.

        Raises:
            ValueError: a refused field holds a value we cannot honour (named as `where` + field).
        """
        _check(hf, TOP_REFUSED, where)
        _check(hf.text_config, TEXT_REFUSED, where + "text_config.")
        _check(hf.vision_config, VISION_REFUSED, where + "vision_config.")
        _check(hf.vision_config, VISION_CONSTRAINTS, where + "vision_config.")
        text = {name: getattr(hf.text_config, name) for name in TEXT_HONOURED}
        text["cross_attention_layers"] = tuple(text["cross_attention_layers"])
        if text["rope_parameters"] == DEFAULT_ROPE:
            text["rope_parameters"] = None
        if isinstance(text["eos_token_id"], list):
            text["eos_token_id"] = tuple(text["eos_token_id"])
        vision = {name: getattr(hf.vision_config, name) for name in VISION_HONOURED if name != "supported_aspect_ratios"}
        vision["intermediate_layers_indices"] = tuple(vision["intermediate_layers_indices"])
        return cls(MllamaTextSettings(**text), MllamaVisionSettings(**vision), image_token_id=hf.image_token_index)


def _check(config: Any, refused: dict, where: str) -> None:
    for name, (accepts, what) in refused.items():
        value = getattr(config, name, None)
        if not accepts(value, config):
            raise ValueError(f"{where}{name}={value!r} is not supported: {what}")


def check_unknown(data: dict, where: str) -> list[str]:
    """Log (and return) keys of a config.json dict that none of the lists knows, per level."""
    unknown = warn_unknown(data, set(TOP_HONOURED) | set(TOP_REFUSED) | set(TOP_INERT), where)
    unknown += warn_unknown(data.get("text_config") or {}, set(TEXT_HONOURED) | set(TEXT_REFUSED) | set(TEXT_INERT), where + " text_config")
    unknown += warn_unknown(data.get("vision_config") or {}, set(VISION_HONOURED) | set(VISION_REFUSED) | set(VISION_INERT), where + " vision_config")
    return unknown


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What transformers fills in for rope_parameters=None (MllamaTextConfig.default_theta).
DEFAULT_ROPE = {"rope_type": "default", "rope_theta": 500000.0}
TEXT_HONOURED = tuple(f.name for f in dataclasses.fields(MllamaTextSettings))
VISION_HONOURED = tuple(f.name for f in dataclasses.fields(MllamaVisionSettings)) + ("supported_aspect_ratios",)
TOP_HONOURED = ("text_config", "vision_config", "image_token_index")
TEXT_INERT = {
    **COMMON_INERT,
    "initializer_range": "initialisation of random weights; loaded weights replace them",
    "use_cache": "KV cache on or off gives the same logits; callers pass use_cache",
}
VISION_INERT = {**COMMON_INERT, "initializer_range": "initialisation of random weights; loaded weights replace them"}
TOP_INERT = dict(COMMON_INERT)
TEXT_REFUSED: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    # transformers 5.24 does not tie them either (`_tied_weights_keys` is commented out there).
    "tie_word_embeddings": (lambda v, c: v is False, "the LM head (vocab_size rows) cannot share the embedding (vocab_size + 8 rows)"),
    # Read by the rotary embedding through getattr although MllamaTextConfig does not declare it.
    "head_dim": (lambda v, c: v is None or v == c.hidden_size // c.num_attention_heads, "must be hidden_size // num_attention_heads"),
}
VISION_REFUSED: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "num_channels": (lambda v, c: v == 3, "must be 3: pixels are RGB"),
}
# Honoured fields that the planner or the pixels read too, with the values they support.
VISION_CONSTRAINTS: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "patch_size": (lambda v, c: _is_int(v), "must be one int (square patches)"),
    "image_size": (lambda v, c: _is_int(v) and v % c.patch_size == 0, "must be one int, a multiple of patch_size (square tiles)"),
    # The processor numbers aspect ratios from its own list (get_all_supported_aspect_ratios);
    # a model trained on another list would read other ids for the same arrangement.
    "supported_aspect_ratios": (
        lambda v, c: [tuple(r) for r in v] == list(supported_aspect_ratios(c.max_num_tiles)),
        "must be every (rows, cols) with rows * cols <= max_num_tiles, in the processor's order",
    ),
    "vision_output_dim": (
        lambda v, c: v == c.hidden_size * (1 + len(c.intermediate_layers_indices)),
        "must be hidden_size * (1 + len(intermediate_layers_indices)), the width of the concatenated features",
    ),
}
TOP_REFUSED: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "quantization_config": (lambda v, c: v is None, "quantised checkpoints are not supported"),
}

PRESETS: dict[str, MllamaModelConfig] = {
    # Runs on a CPU in well under a second: 3 decoder layers, the middle one cross-attention;
    # tiles of 28 pixels (2 x 2 patches + class token = 5 keys a tile), up to 4 tiles.
    "mllama-debug": MllamaModelConfig(
        text=MllamaTextSettings(
            vocab_size=384, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, max_position_embeddings=512, cross_attention_layers=(1,),
            bos_token_id=256, eos_token_id=259, pad_token_id=258,
        ),
        vision=MllamaVisionSettings(
            hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=4, intermediate_size=64,
            vision_output_dim=96, image_size=28, patch_size=14, max_num_tiles=4, intermediate_layers_indices=(0, 1),
        ),
        image_token_id=384,
    ),
    # Llama 3.2-11B-Vision's published config.json.
    "llama-3.2-11b-vision": MllamaModelConfig(
        text=MllamaTextSettings(
            rope_parameters={
                "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
            },
            eos_token_id=128001,
        ),
        vision=MllamaVisionSettings(),
    ),
}
