"""Checkpoint formats: transformers' llava_onevision, original LLaVA-NeXT, LLM + SigLIP components.

    from onevision.checkpoint import load_checkpoint, save_hf, from_components
    model = load_checkpoint("llava-onevision-qwen2-0.5b-ov")      # format detected
    save_hf(model, "out", dtype=torch.bfloat16, tokenizer=tokenizer)
    stage1 = from_components("Qwen2-0.5B-Instruct", "siglip-so400m-patch14-384", vision_feature_layer=-2)

Every loader builds the model with parameters on the meta device and assigns each tensor as it
is read, so a checkpoint is held in memory once.
"""

from onevision.checkpoint.components import add_media_tokens, from_components, read_components
from onevision.checkpoint.convert import (
    DTYPES,
    FORMATS,
    convert,
    detect_format,
    load_checkpoint,
    read_checkpoint,
    read_config,
    validate,
    write_checkpoint,
)
from onevision.checkpoint.files import Checkpoint, CheckpointError, TensorRef, materialize
from onevision.checkpoint.hf import load_hf, read_hf, read_hf_config, save_hf, save_processor
from onevision.checkpoint.llava_next import (
    load_llava_next,
    read_llava_next,
    read_llava_next_config,
    save_llava_next,
)
from onevision.checkpoint.llava_next_fields import expand_grid_pinpoints

__all__ = [
    "DTYPES",
    "FORMATS",
    "Checkpoint",
    "CheckpointError",
    "TensorRef",
    "add_media_tokens",
    "convert",
    "detect_format",
    "expand_grid_pinpoints",
    "from_components",
    "load_checkpoint",
    "load_hf",
    "load_llava_next",
    "materialize",
    "read_checkpoint",
    "read_components",
    "read_config",
    "read_hf",
    "read_hf_config",
    "read_llava_next",
    "read_llava_next_config",
    "save_hf",
    "save_llava_next",
    "save_processor",
    "validate",
    "write_checkpoint",
]
