"""Every field of transformers' `Qwen2Config`, `SiglipVisionConfig` and `LlavaOnevisionConfig`, sorted.

Reading a transformers config (`ModelConfig.from_hf`, the component readers) goes through
here, so no field that changes tokens, pixels or logits is dropped on the way:

- honoured: the value becomes a field of our configs and reaches the transformers module we
  wrap unchanged (`Qwen2Config(**asdict(TextConfig))`, `SiglipVisionConfig(**asdict(VisionConfig))`),
  so it acts exactly as in transformers;
- refused: we support one value only; another raises `ValueError` naming the field;
- inert: cannot change tokens, pixels or logits; each carries a one-line reason.

Keys a file holds that neither transformers 5.x nor these lists know are logged by name
(transformers keeps them as plain attributes; the modules we wrap read none of them).
tests/test_config_fields.py enumerates the installed transformers' fields and fails on one
that is in none of the lists.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

from onevision.model.config import TextConfig, VisionConfig

logger = logging.getLogger(__name__)

# Fields every transformers config has (PreTrainedConfig); none reaches Qwen2, SigLIP or the splice.
COMMON_INERT = {
    "transformers_version": "which transformers wrote the file",
    "architectures": "which class to build; we build OneVisionModel",
    "model_type": "checked by the readers (llava_onevision, qwen2, siglip_vision_model)",
    "_name_or_path": "where the config was read from",
    "output_hidden_states": "asks for extra outputs; logits are the same",
    "output_attentions": "asks for extra outputs; logits are the same",
    "return_dict": "output container type",
    "dtype": "storage dtype; weights load in the dtype asked for (load_hf(dtype=...))",
    "chunk_size_feed_forward": "not read by the Qwen2, SigLIP or llava_onevision modules in transformers 5.x",
    "is_encoder_decoder": "False for all three; generation bookkeeping only",
    "id2label": "classification heads only",
    "label2id": "classification heads only",
    "problem_type": "classification losses only",
}

# transformers field -> our TextConfig field it lands in (passed back to Qwen2Config by name).
QWEN2_HONOURED = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_hidden_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "num_key_value_heads": "num_key_value_heads",
    "hidden_act": "hidden_act",
    "max_position_embeddings": "max_position_embeddings",
    "rms_norm_eps": "rms_norm_eps",
    "tie_word_embeddings": "tie_word_embeddings",
    "rope_parameters": "rope_theta + rope_scaling",
    "use_sliding_window": "use_sliding_window",
    "sliding_window": "sliding_window",
    "max_window_layers": "max_window_layers",
    "layer_types": "layer_types",
    "attention_dropout": "attention_dropout",
    "pad_token_id": "pad_token_id",
}
QWEN2_INERT = {
    **COMMON_INERT,
    "initializer_range": "initialisation of random weights; loaded weights replace them",
    "use_cache": "KV cache on or off gives the same logits; callers pass use_cache",
    "bos_token_id": "generation bookkeeping; prompts come from the tokenizer and chat template",
    "eos_token_id": "generation bookkeeping; our generation stops at the tokenizer's eos",
}
# Read by transformers' Qwen2 modules through getattr although Qwen2Config does not declare it.
QWEN2_REFUSED: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "head_dim": (
        lambda value, c: value is None or value == c.hidden_size // c.num_attention_heads,
        "must be hidden_size // num_attention_heads (Qwen2's)",
    ),
}
# Every key of `rope_parameters` goes to Qwen2's rotary embedding whole: rope_theta as
# TextConfig.rope_theta, all others in TextConfig.rope_scaling.
ROPE_HONOURED = (
    "rope_theta", "rope_type", "partial_rotary_factor", "factor", "original_max_position_embeddings",
    "attention_factor", "beta_fast", "beta_slow", "short_factor", "long_factor", "low_freq_factor",
    "high_freq_factor", "mscale", "mscale_all_dim", "truncate", "mrope_section",
)

SIGLIP_HONOURED = {
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_hidden_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "image_size": "image_size",
    "patch_size": "patch_size",
    "layer_norm_eps": "layer_norm_eps",
    "hidden_act": "hidden_act",
    "attention_dropout": "attention_dropout",
}
SIGLIP_INERT = {
    **COMMON_INERT,
    "vision_use_head": "llava_onevision never uses the pooling head (features come from a hidden layer); its weights are skipped",
}
SIGLIP_REFUSED: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "num_channels": (lambda value, c: value == 3, "must be 3: pixels are RGB"),
}

# transformers field -> where it lands in ModelConfig.
LLAVA_HONOURED = {
    "vision_config": "vision (SigLIP fields above)",
    "text_config": "text (Qwen2 fields above)",
    "image_token_index": "image_token_id",
    "video_token_index": "video_token_id",
    "projector_hidden_act": "projector_act",
    "vision_feature_layer": "vision_feature_layer (one int, or a list whose hidden states are concatenated on channels)",
    "tie_word_embeddings": "text.tie_word_embeddings",
    "image_grid_pinpoints": "visual.grid_pinpoints",
    "vision_aspect_ratio": "visual.anyres_max ('anyres_max_N' only)",
}
LLAVA_INERT = dict(COMMON_INERT)
LLAVA_REFUSED: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "vision_feature_select_strategy": (
        lambda value, c: value == "full",
        "only 'full' is supported (SigLIP has no CLS token to drop)",
    ),
    "multimodal_projector_bias": (lambda value, c: value is True, "only True is supported (the projector has biases)"),
    "quantization_config": (lambda value, c: value is None, "quantised checkpoints are not supported"),
}
# Keys older files hold that transformers 5.x reads into other fields or never reads.
LEGACY_KEYS = {
    "torch_dtype": "older spelling of dtype",
    "rope_theta": "older spelling; transformers moves it into rope_parameters",
    "rope_scaling": "older spelling; transformers moves it into rope_parameters",
    "use_image_newline_parameter": "transformers 4.x note; the newline vector always exists",
    "ignore_index": "transformers 4.x loss label; ours is -100 as well",
    "onevision_visual": "our visual settings (onevision.checkpoint.hf)",
    "_attn_implementation_autoset": "transformers 4.x bookkeeping; the attention kernel is chosen when building",
}


def _check_refused(config, refused: dict, where: str) -> None:
    for name, (accepts, what) in refused.items():
        value = getattr(config, name, None)
        if not accepts(value, config):
            raise ValueError(f"{where}{name}={value!r} is not supported: {what}")


def warn_unknown(data: dict, known: set[str], where: str) -> list[str]:
    """Log (and return) the keys of `data` that no list here knows."""
    unknown = sorted(set(data) - known - set(LEGACY_KEYS))
    if unknown:
        logger.warning(f"{where}: ignoring keys that are no field of the transformers config (its modules do not read them): {unknown}")
    return unknown


def known_fields(kind: str) -> set[str]:
    """All field names sorted for `kind` ('qwen2', 'siglip' or 'llava_onevision')."""
    tables = {
        "qwen2": (QWEN2_HONOURED, QWEN2_REFUSED, QWEN2_INERT),
        "siglip": (SIGLIP_HONOURED, SIGLIP_REFUSED, SIGLIP_INERT),
        "llava_onevision": (LLAVA_HONOURED, LLAVA_REFUSED, LLAVA_INERT),
    }[kind]
    return set().union(*tables)


def derived_layer_types(text: TextConfig) -> list[str]:
    """Qwen2Config's own layer_types for these sliding-window settings."""
    window = text.sliding_window if text.use_sliding_window else None
    return [
        "sliding_attention" if window is not None and i >= text.max_window_layers else "full_attention"
        for i in range(text.num_hidden_layers)
    ]


def text_from_hf(qwen2, where: str = "text_config.") -> TextConfig:
    """Our `TextConfig` from a transformers `Qwen2Config`, every logit-changing field kept.

    Raises:
        ValueError: a refused field holds a value we do not support (named as `where` + field).
    """
    _check_refused(qwen2, QWEN2_REFUSED, where)
    rope = dict(qwen2.rope_parameters or {})
    theta = rope.pop("rope_theta", None)
    if rope in ({}, {"rope_type": "default"}):
        rope = None
    values = {ours: getattr(qwen2, theirs) for theirs, ours in QWEN2_HONOURED.items() if theirs != "rope_parameters"}
    values["rope_theta"] = TextConfig.rope_theta if theta is None else float(theta)
    values["rope_scaling"] = rope
    if values["layer_types"] is not None:
        values["layer_types"] = list(values["layer_types"])
    text = TextConfig(**values)
    # Kept only when it is not what Qwen2Config derives, so changing the layer count stays simple.
    if text.layer_types == derived_layer_types(text):
        text = dataclasses.replace(text, layer_types=None)
    return text


def vision_from_hf(siglip, where: str = "vision_config.") -> VisionConfig:
    """Our `VisionConfig` from a transformers `SiglipVisionConfig`.

    Raises:
        ValueError: a refused field holds a value we do not support, or a non-square size.
    """
    _check_refused(siglip, SIGLIP_REFUSED, where)
    for name in ("image_size", "patch_size"):
        value = getattr(siglip, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{where}{name}={value!r} is not supported: must be one int (square tiles)")
    return VisionConfig(**{ours: getattr(siglip, theirs) for theirs, ours in SIGLIP_HONOURED.items()})


def check_llava(hf, where: str = "") -> None:
    """Raise `ValueError` naming the first `LlavaOnevisionConfig` field we cannot honour."""
    _check_refused(hf, LLAVA_REFUSED, where)
    layer = hf.vision_feature_layer
    layers = [layer] if isinstance(layer, int) else list(layer) if isinstance(layer, (list, tuple)) else None
    if not layers or not all(isinstance(v, int) and not isinstance(v, bool) for v in layers):
        raise ValueError(f"{where}vision_feature_layer={layer!r} is not supported: one int or a non-empty list of ints")
    aspect = str(hf.vision_aspect_ratio)
    if not (aspect.startswith("anyres_max_") and aspect.removeprefix("anyres_max_").isdigit()):
        raise ValueError(f"{where}vision_aspect_ratio={aspect!r} is not supported: only 'anyres_max_N'")
