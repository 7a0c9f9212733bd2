"""Every field of transformers' `LlavaConfig`, `CLIPVisionConfig` and `LlamaConfig`, sorted.

The LLaVA-family counterpart of `onevision.model.hf_fields` (same three kinds: honoured, refused
with the field's name, inert with a reason). Reading a transformers `llava` folder
(`onevision.checkpoint.llava_hf`), a CLIP or Llama component folder, or the original
`llava_llama` layout goes through here. tests/test_llava_fields.py enumerates the installed
transformers' fields and fails on one that is in none of the lists.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

from onevision.model.config import TextConfig, VisionConfig
from onevision.model.hf_fields import COMMON_INERT, QWEN2_HONOURED, QWEN2_INERT, SIGLIP_HONOURED, _check_refused, text_from_hf

# Llama shares Qwen2's shape fields; the sliding-window ones are Qwen2's alone.
LLAMA_HONOURED = {k: v for k, v in QWEN2_HONOURED.items() if k not in ("use_sliding_window", "sliding_window", "max_window_layers", "layer_types")}
LLAMA_INERT = dict(QWEN2_INERT)
LLAMA_REFUSED: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "head_dim": (
        lambda value, c: value is None or value == c.hidden_size // c.num_attention_heads,
        "must be hidden_size // num_attention_heads (Vicuna / Llama-2's)",
    ),
    "attention_bias": (lambda value, c: not value, "must be False (Vicuna / Llama-2 have no attention biases)"),
    "mlp_bias": (lambda value, c: not value, "must be False (Vicuna / Llama-2 have no MLP biases)"),
    # transformers 5.x's LlamaForCausalLM ignores it; LLaVA's own copy slices the head by it,
    # which gives the same logits up to rounding, so 1 (no slicing) is the only value kept exact.
    "pretraining_tp": (lambda value, c: value in (None, 1), "must be 1 (sliced matmuls are not reproduced)"),
}

CLIP_HONOURED = dict(SIGLIP_HONOURED)
CLIP_INERT = {
    **COMMON_INERT,
    "initializer_range": "initialisation of random weights; loaded weights replace them",
    "initializer_factor": "initialisation of random weights; loaded weights replace them",
    "projection_dim": "CLIP's image-text projection, which LLaVA never uses (features come from a hidden layer)",
}
CLIP_REFUSED: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "num_channels": (lambda value, c: value == 3, "must be 3: pixels are RGB"),
}

LLAVA_HONOURED = {
    "vision_config": "vision + vision_tower (CLIP or SigLIP fields)",
    "text_config": "text + text_model (Llama or Qwen2 fields)",
    "image_token_index": "image_token_id",
    "projector_hidden_act": "projector_act",
    "vision_feature_layer": "vision_feature_layer (one int or a list, concatenated on channels)",
    "vision_feature_select_strategy": "vision_feature_select_strategy ('default' drops the class token, 'full' keeps it)",
    "tie_word_embeddings": "text.tie_word_embeddings",
}
LLAVA_INERT = {
    **COMMON_INERT,
    "image_seq_length": "read only by the processor to expand <image>; our planner counts the tokens the tower gives",
}
LLAVA_REFUSED: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "multimodal_projector_bias": (lambda value, c: value is True, "only True is supported (the projector has biases)"),
    "quantization_config": (lambda value, c: value is None, "quantised checkpoints are not supported"),
}

TOWER_MODEL_TYPES = {"clip_vision_model": "clip", "siglip_vision_model": "siglip"}
TEXT_MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2"}


def known_fields(kind: str) -> set[str]:
    """All field names sorted for `kind` ('llama', 'clip' or 'llava')."""
    tables = {
        "llama": (LLAMA_HONOURED, LLAMA_REFUSED, LLAMA_INERT),
        "clip": (CLIP_HONOURED, CLIP_REFUSED, CLIP_INERT),
        "llava": (LLAVA_HONOURED, LLAVA_REFUSED, LLAVA_INERT),
    }[kind]
    return set().union(*tables)


def llama_text_from_hf(llama, where: str = "text_config.") -> TextConfig:
    """Our `TextConfig` from a transformers `LlamaConfig`, every logit-changing field kept.

    Raises:
        ValueError: a refused field holds a value we do not support (named as `where` + field).
    """
    _check_refused(llama, LLAMA_REFUSED, where)
    # text_from_hf reads Qwen2's field names: Llama's own, plus the sliding-window ones at their
    # "off" values (ModelConfig refuses any other for a Llama decoder).
    fields = {name: getattr(llama, name) for name in LLAMA_HONOURED}
    fields.update(use_sliding_window=False, sliding_window=None, max_window_layers=TextConfig.max_window_layers, layer_types=None, head_dim=None)
    return text_from_hf(SimpleNamespace(**fields), where)


def clip_vision_from_hf(clip, where: str = "vision_config.") -> VisionConfig:
    """Our `VisionConfig` from a transformers `CLIPVisionConfig`.

    Raises:
        ValueError: a refused field holds a value we do not support, or a non-square size.
    """
    from onevision.model.hf_fields import vision_from_hf

    _check_refused(clip, CLIP_REFUSED, where)
    return vision_from_hf(clip, where)


def check_llava_config(hf, where: str = "") -> None:
    """Raise `ValueError` naming the first `LlavaConfig` field we cannot honour."""
    _check_refused(hf, LLAVA_REFUSED, where)
    layer = hf.vision_feature_layer
    layers = [layer] if isinstance(layer, int) else list(layer) if isinstance(layer, (list, tuple)) else None
    if not layers or not all(isinstance(v, int) and not isinstance(v, bool) for v in layers):
        raise ValueError(f"{where}vision_feature_layer={layer!r} is not supported: one int or a list of ints")
    for name, table in (("vision_config", TOWER_MODEL_TYPES), ("text_config", TEXT_MODEL_TYPES)):
        model_type = getattr(getattr(hf, name), "model_type", None)
        if model_type not in table:
            raise ValueError(f"{where}{name}.model_type={model_type!r} is not supported: one of {sorted(table)}")
