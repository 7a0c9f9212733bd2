"""Format detection and conversion between checkpoint layouts.

Formats, told apart by config.json's `model_type` (and `architectures` for 'llava'):
- 'hf': transformers' `llava_onevision` (see `onevision.checkpoint.hf`);
- 'llava-next': the original LLaVA-NeXT `llava_qwen`, which the released lmms-lab configs write as
  model_type 'llava' with architectures ['LlavaQwenForCausalLM'] (see `onevision.checkpoint.llava_next`);
- 'llava-hf': transformers' `llava` (LlavaForConditionalGeneration; LLaVA-1.5 as llava-hf ships it;
  see `onevision.checkpoint.llava_hf`);
- 'llava-original': the original LLaVA `llava_llama` (LLaVA v1 / 1.5; model_type 'llava_llama', or
  'llava' with architectures ['LlavaLlamaForCausalLM']), its CLIP tower in a folder of its own
  (see `onevision.checkpoint.llava_original`);
- components: an LLM folder (Qwen2 or Llama) plus a vision folder (SigLIP or CLIP)
  (`onevision.checkpoint.components`), given as two folders since neither alone is a model.

`convert` streams: it reads headers, checks every key and shape against the model the config
describes (built on the meta device, so nothing is allocated), then writes one shard at a time.
"""

from __future__ import annotations

from pathlib import Path

import torch

from onevision.checkpoint.components import LLM_MODEL_TYPES, VISION_MODEL_TYPES, read_components
from onevision.checkpoint.files import Checkpoint, CheckpointError, check_keys, empty_model, materialize, model_keys, read_json
from onevision.checkpoint.hf import CONFIG_FILE, HF_MODEL_TYPE, read_hf, write_hf
from onevision.checkpoint.llava_hf import LLAVA_HF_MODEL_TYPE, is_llava_hf_config, read_llava_hf, write_llava_hf
from onevision.checkpoint.llava_original import ORIGINAL_MODEL_TYPE, is_original_config, read_original, write_original
from onevision.checkpoint.llava_next import LLAVA_NEXT_MODEL_TYPE, is_llava_next_config, read_llava_next, write_llava_next
from onevision.model.config import ModelConfig

MLLAMA_MODEL_TYPE = "mllama"
"""The cross-attention family's folders (onevision/checkpoint/mllama.py reads them); detected, not converted."""

FORMATS = ("hf", "llava-next", "llava-hf", "llava-original")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
"""Weight dtypes by their short names (convert, soup and inference take these); the one table."""


def detect_format(folder: str | Path) -> str:
    """'hf', 'llava-next', 'llava-hf', 'llava-original' or 'mllama', from `folder`/config.json.

    Raises:
        CheckpointError: no folder or config.json, a bare LLM or SigLIP (a component, not a
            model), or an unknown model_type; the message names the folder and what was looked for.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{folder} has no {CONFIG_FILE}; looked for a checkpoint folder with config.json "
            f"(model_type {HF_MODEL_TYPE!r} or {LLAVA_NEXT_MODEL_TYPE!r}) and safetensors weights"
        )
    data = read_json(path)
    model_type = data.get("model_type")
    if model_type == HF_MODEL_TYPE:
        return "hf"
    if is_llava_next_config(data):
        return "llava-next"
    if is_llava_hf_config(data):
        return "llava-hf"
    if is_original_config(data):
        return "llava-original"
    if model_type == MLLAMA_MODEL_TYPE:
        return "mllama"
    if model_type in LLM_MODEL_TYPES + VISION_MODEL_TYPES:
        raise CheckpointError(
            f"{folder} holds a single component (model_type {model_type!r}); build a model from an LLM and a "
            "vision (SigLIP or CLIP) folder together (from_components, or `onevision convert --llm DIR --vision DIR DST`)"
        )
    raise CheckpointError(
        f"{path}: model_type {model_type!r} is not a known checkpoint format; looked for "
        f"{HF_MODEL_TYPE!r} (transformers) or {LLAVA_NEXT_MODEL_TYPE!r} (original LLaVA-NeXT; the released "
        f"lmms-lab configs say 'llava' with architectures ['LlavaQwenForCausalLM']), {LLAVA_HF_MODEL_TYPE!r} "
        f"(transformers LlavaForConditionalGeneration), {ORIGINAL_MODEL_TYPE!r} (original LLaVA) or {MLLAMA_MODEL_TYPE!r} "
        "(the cross-attention family)"
    )


def read_checkpoint(folder: str | Path, *, vision_dir: str | Path | None = None) -> Checkpoint:
    """Any supported checkpoint folder as a lazy `Checkpoint` (format auto-detected).

    `vision_dir` gives a LLaVA-NeXT checkpoint's SigLIP shape when its config names a tower
    other than so400m-patch14-384 and carries no `vision_config`.
    """
    found = detect_format(folder)
    if found == "mllama":
        raise CheckpointError(
            f"{folder} is a cross-attention (mllama) checkpoint, not a LLaVA one: load it with "
            "onevision.checkpoint.mllama.load_mllama or OneVision.from_pretrained, train it with a model.family=mllama stage"
        )
    if found == "hf":
        return read_hf(folder)
    if found == "llava-hf":
        return read_llava_hf(folder)
    if found == "llava-original":
        return read_original(folder, vision_dir)
    return read_llava_next(folder, vision_dir)


def read_config(folder: str | Path, *, vision_dir: str | Path | None = None) -> ModelConfig:
    """Our `ModelConfig` of any supported checkpoint folder (format auto-detected)."""
    return read_checkpoint(folder, vision_dir=vision_dir).config


def load_checkpoint(
    folder: str | Path,
    *,
    vision_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    progress: bool = True,
):
    """`OneVisionModel` from any supported checkpoint folder (format auto-detected)."""
    return materialize(read_checkpoint(folder, vision_dir=vision_dir), device=device, dtype=dtype, progress=progress)


def validate(checkpoint: Checkpoint) -> None:
    """Check keys and shapes against the model the config describes (built on meta, nothing allocated).

    Raises:
        CheckpointError: listing missing and unexpected keys and shape mismatches.
    """
    check_keys(model_keys(empty_model(checkpoint.config)), checkpoint.tensors, checkpoint.source)


def write_checkpoint(
    checkpoint: Checkpoint,
    folder: str | Path,
    *,
    to: str,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = "5GB",
    tokenizer=None,
    progress: bool = True,
    strict: bool = True,
) -> list[Path]:
    """Write `checkpoint` in format `to` ('hf' or 'llava-next'); returns the weight files.

    `strict` (hf only): False writes settings transformers cannot express for onevision alone,
    with a warning; the llava-next layout always refuses them.
    """
    if to == "hf":
        return write_hf(checkpoint, folder, dtype=dtype, max_shard_size=max_shard_size, tokenizer=tokenizer, progress=progress, strict=strict)
    if to == "llava-original":
        return write_original(checkpoint, folder, dtype=dtype, max_shard_size=max_shard_size, tokenizer=tokenizer, progress=progress)
    if to == "llava-hf":
        return write_llava_hf(checkpoint, folder, dtype=dtype, max_shard_size=max_shard_size, tokenizer=tokenizer, progress=progress)
    if to == "llava-next":
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        return write_llava_next(checkpoint, folder, dtype=dtype, max_shard_size=max_shard_size, progress=progress)
    raise CheckpointError(f"unknown target format {to!r}; choose one of {FORMATS}")


def native_format(config: ModelConfig) -> str:
    """The layout that holds a model of `config` whole: 'hf' (llava_onevision) for OneVision's parts,
    'llava-hf' when transformers' llava expresses it, else 'llava-original' (LLaVA v1's linear projector)."""
    from onevision.checkpoint.llava_hf import not_in_llava

    if config.is_onevision:
        return "hf"
    return "llava-hf" if not not_in_llava(config) else "llava-original"


def save_model(model, folder: str | Path, *, dtype: torch.dtype | None = None, tokenizer=None, progress: bool = True, strict: bool = True) -> str:
    """Save `model` in its `native_format`; returns the format written.

    `strict=False` (llava_onevision only) keeps settings transformers cannot express, with a warning.

    Raises:
        CheckpointError: the layout cannot express a part or setting of the model, named.
    """
    from onevision.checkpoint.files import model_refs

    to = native_format(model.config)
    checkpoint = Checkpoint(model.config, model_refs(model), "model", to)
    write_checkpoint(checkpoint, folder, to=to, dtype=dtype, tokenizer=tokenizer, progress=progress, strict=strict)
    return to


def convert(
    src: str | Path | None,
    dst: str | Path,
    *,
    to: str,
    dtype: torch.dtype | None = None,
    llm_dir: str | Path | None = None,
    vision_dir: str | Path | None = None,
    vision_feature_layer: int | list[int] = -1,
    tokenizer=None,
    max_shard_size: int | str = "5GB",
    progress: bool = True,
    strict: bool = True,
    family: str = "onevision",
) -> Checkpoint:
    """Convert a checkpoint folder (or an LLM + SigLIP pair) into `dst` in format `to`.

    Args:
        src: checkpoint folder (any of `FORMATS`, detected); None with `llm_dir` and `vision_dir`.
        dst: output folder (created); must not be `src`.
        to: one of `FORMATS`: 'hf', 'llava-next', 'llava-hf', 'llava-original'.
        dtype: cast floating weights (e.g. torch.bfloat16); None keeps the stored dtypes.
        llm_dir, vision_dir: components to start from (vision_dir alone: a LLaVA-NeXT
            checkpoint's SigLIP config, or an original LLaVA checkpoint's CLIP folder).
        vision_feature_layer: for components, the SigLIP layer used as features (see
            `from_components`).
        family: for components, 'onevision', 'llava15' or 'llava-v1' (see `from_components`).
        tokenizer: saved into `dst`; for components it also sets the placeholder ids.
        strict: refuse settings the target cannot express (each named); False, for 'hf' only,
            writes them for onevision alone (an original-layout checkpoint's truncating unpad,
            average pooling or grid newlines) with a warning.

    Returns:
        The checkpoint read (its config is the one written).

    Raises:
        CheckpointError: unknown format, keys or shapes that do not fit, `dst` == `src`.
    """
    if to not in FORMATS:
        raise CheckpointError(f"unknown target format {to!r}; choose one of {FORMATS}")
    if src is None:
        if llm_dir is None or vision_dir is None:
            raise CheckpointError("give a source checkpoint folder, or both an LLM folder and a SigLIP folder")
        checkpoint = read_components(llm_dir, vision_dir, vision_feature_layer=vision_feature_layer, tokenizer=tokenizer, family=family)
        sources = [Path(llm_dir), Path(vision_dir)]
    else:
        if llm_dir is not None:
            raise CheckpointError("give either a source checkpoint folder or an LLM + SigLIP pair, not both")
        checkpoint = read_checkpoint(src, vision_dir=vision_dir)
        sources = [Path(src)]
    if any(Path(dst).resolve() == s.resolve() for s in sources):
        raise CheckpointError(f"the output folder {dst} is a source folder; write elsewhere")
    validate(checkpoint)
    write_checkpoint(checkpoint, dst, to=to, dtype=dtype, max_shard_size=max_shard_size, tokenizer=tokenizer, progress=progress, strict=strict)
    return checkpoint
