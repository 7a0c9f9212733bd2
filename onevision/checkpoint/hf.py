"""transformers' `llava_onevision` layout: read it, write it, and the processor files beside it.

What `LlavaOnevisionForConditionalGeneration.save_pretrained` writes: `config.json`
(`LlavaOnevisionConfig`, architectures ["LlavaOnevisionForConditionalGeneration"]),
`model.safetensors` or shards + `model.safetensors.index.json`, and with a processor
`preprocessor_config.json`, `video_preprocessor_config.json`, `processor_config.json` and the
tokenizer files.

Keys are written as released checkpoints hold them (and as transformers 5.x re-saves a model
loaded from one), which every transformers version reads:

    ours                              transformers file
    vision_tower.vision_model.*       vision_tower.vision_model.*
    projector.linear_{1,2}.*          multi_modal_projector.linear_{1,2}.*
    image_newline                     image_newline
    language_model.model.*            language_model.model.*
    language_model.lm_head.weight     language_model.lm_head.weight (absent when tied)

Reading also accepts the other layouts transformers 5.x converts on load (its
`conversion_mapping` for llava_onevision -> llava_next, LlavaModel and SiglipVisionModel): the
in-memory one (`model.vision_tower.*` without `vision_model`, `model.multi_modal_projector.*`,
`model.image_newline`, `model.language_model.*`, `lm_head.weight`), the base-model one
(`language_model.*` = Qwen2Model keys) and a fresh 5.x save (`vision_tower.*` without
`vision_model`).

Every field of `config.json` (and of its `text_config` / `vision_config`) is honoured, refused
with its name, or inert, as `onevision.model.hf_fields` lists; SigLIP pooling-head weights
(`vision_use_head`) are skipped, as llava_onevision never runs that head.

Our visual settings are kept whole under the extra config key `onevision_visual` (transformers
keeps unknown config keys, and ignores this one), so our reader gets them back. Those
`llava_onevision` cannot express (`not_in_transformers`: video newlines other than one per
video, video pooling strides other than 2, base-only single images, a token budget) make
`save_hf` refuse, naming them, since transformers would read other numbers; `strict=False`
writes them anyway with a warning (stage-to-stage exports, read back by onevision).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import torch

from onevision.budget import VisualSettings
from onevision.checkpoint.components import add_media_tokens
from onevision.checkpoint.files import (
    Checkpoint,
    CheckpointError,
    TensorFolder,
    TensorRef,
    materialize,
    model_refs,
    read_json,
    resolve_tied_head,
    write_tensors,
)
from onevision.model.config import ModelConfig
from onevision.model.hf_fields import known_fields, warn_unknown
from onevision.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN, check_tokenizer
from onevision.utils.dataclass_io import ConfigError, from_dict, to_dict

HF_MODEL_TYPE = "llava_onevision"
HF_ARCHITECTURE = "LlavaOnevisionForConditionalGeneration"
VISUAL_KEY = "onevision_visual"
CONFIG_FILE = "config.json"
VISION_HEAD_PREFIX = "vision_tower.vision_model.head."
"""SigLIP's pooling head (vision_use_head): llava_onevision never runs it, so its weights are skipped."""

logger = logging.getLogger(__name__)

# transformers key (any layout it reads) -> ours; the first pattern that matches wins.
_FROM_HF = (
    (re.compile(r"^(?:model\.)?vision_tower\.(?:vision_model\.)?"), "vision_tower.vision_model."),
    (re.compile(r"^(?:model\.)?multi_modal_projector\."), "projector."),
    (re.compile(r"^(?:model\.)?image_newline$"), "image_newline"),
    (re.compile(r"^(?:(?:model\.)?language_model\.)?lm_head\."), "language_model.lm_head."),
    (re.compile(r"^(?:model\.)?language_model\.(?:model\.)?"), "language_model.model."),
)


def hf_key_to_ours(key: str) -> str | None:
    """Our key for a transformers llava_onevision key, None if it is not one."""
    for pattern, replacement in _FROM_HF:
        match = pattern.match(key)
        if match:
            return replacement + key[match.end() :]
    return None


def ours_key_to_hf(key: str) -> str:
    """The key transformers' `save_pretrained` writes for our `key`."""
    if key.startswith("projector."):
        return "multi_modal_projector." + key[len("projector.") :]
    if key == "image_newline" or key.startswith(("vision_tower.vision_model.", "language_model.model.", "language_model.lm_head.")):
        return key
    raise KeyError(f"{key!r} is not a key of OneVisionModel")


def read_hf_config(folder: str | Path) -> ModelConfig:
    """Our `ModelConfig` from a llava_onevision `config.json` (plus `onevision_visual` when present).

    Raises:
        CheckpointError: no config.json, another model_type, or settings we do not support.
    """
    from transformers import LlavaOnevisionConfig

    path = Path(folder) / CONFIG_FILE
    data = read_json(path)
    if data.get("model_type") != HF_MODEL_TYPE:
        raise CheckpointError(f"{path}: model_type is {data.get('model_type')!r}, expected {HF_MODEL_TYPE!r}")
    warn_unknown(data, known_fields("llava_onevision"), str(path))
    for key, kind in (("text_config", "qwen2"), ("vision_config", "siglip")):
        if isinstance(data.get(key), dict):
            warn_unknown(data[key], known_fields(kind), f"{path}: {key}")
    try:
        hf = LlavaOnevisionConfig.from_dict({k: v for k, v in data.items() if k != VISUAL_KEY})
        config = ModelConfig.from_hf(hf)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: {error}") from error
    if VISUAL_KEY in data:
        try:
            visual = from_dict(VisualSettings, data[VISUAL_KEY], where=VISUAL_KEY)
        except (ConfigError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: {error}") from error
        config = dataclasses.replace(config, visual=visual)
    return config


# Our VisualSettings fields that llava_onevision expresses, or that cannot change its numbers.
VISUAL_EXPRESSED = {
    "image_size": "vision_config.image_size",
    "patch_size": "vision_config.patch_size",
    "anyres_max": "vision_aspect_ratio 'anyres_max_N'",
    "max_grid": "image_grid_pinpoints",
    "grid_pinpoints": "image_grid_pinpoints",
    "frames_upbound": "caps our frame sampler only; transformers' processor takes the frames it is given",
    "min_frames": "acts only under max_visual_tokens",
    "max_pool_stride": "acts only under max_visual_tokens",
    "min_anyres_max": "acts only under max_visual_tokens",
    "image_newline": "follows ModelConfig.use_image_newline, which llava_onevision needs True (to_hf refuses otherwise)",
    "class_token": "follows the tower and strategy; a SigLIP tower has no class token",
}
# Our VisualSettings fields llava_onevision applies with one value only: (that value, what it does).
VISUAL_FIXED = {
    "video_pool_stride": (2, "llava_onevision pools video frames with stride 2"),
    "video_pool_mode": ("bilinear", "llava_onevision pools video frames bilinearly"),
    "video_newline": ("video", "llava_onevision puts one newline after each video"),
    "single_image": ("anyres", "llava_onevision runs a lone image through AnyRes"),
    "max_visual_tokens": (None, "llava_onevision has no token budget; samples over it would get other tokens"),
    "unpad_rounding": ("round", "llava_onevision rounds when unpadding, int(round(x, 7))"),
    "base_image": ("pad", "llava_onevision's processor pads base-resolution images to a square"),
}


def not_in_transformers(config: ModelConfig) -> list[str]:
    """Our settings that transformers' llava_onevision cannot express (it would read other numbers), one line each.

    Tower and decoder fields, feature layer, projector activation and placeholder ids are
    expressed by the config; `VISUAL_EXPRESSED` lists the visual fields that are expressed or
    cannot change its numbers, `VISUAL_FIXED` those it applies with one value only.
    """
    problems = []
    for name, (value, what) in VISUAL_FIXED.items():
        ours = getattr(config.visual, name)
        if ours != value:
            problems.append(f"visual.{name}={ours!r} ({what})")
    return problems


def check_expressible(config: ModelConfig, strict: bool = True, where: str = "llava_onevision export") -> None:
    """Refuse (strict) or warn about the settings `not_in_transformers` lists.

    Raises:
        CheckpointError: strict and some setting cannot be expressed; the message names each.
    """
    if not config.is_onevision:
        raise CheckpointError(
            f"{where}: transformers' llava_onevision has SigLIP + mlp2x_gelu + image_newline + Qwen2; this model has "
            f"vision_tower={config.vision_tower!r}, projector_type={config.projector_type!r}, "
            f"use_image_newline={config.use_image_newline}, text_model={config.text_model!r} "
            "(write it as 'llava-hf' or 'llava-original')"
        )
    problems = not_in_transformers(config)
    if not problems:
        return
    text = "; ".join(problems)
    if strict:
        raise CheckpointError(
            f"{where}: transformers' llava_onevision cannot express {text}. Change these settings, or pass "
            "strict=False to write them for onevision only (transformers would read other numbers)"
        )
    logger.warning(f"{where}: written for onevision only, transformers will not apply {text}")


def hf_config(config: ModelConfig, dtype: torch.dtype | None = None):
    """The `LlavaOnevisionConfig` we write: `config.to_hf()` plus architectures, dtype, our visual settings."""
    hf = config.to_hf()
    hf.architectures = [HF_ARCHITECTURE]
    if dtype is not None:
        hf.dtype = str(dtype).removeprefix("torch.")
    setattr(hf, VISUAL_KEY, to_dict(config.visual))
    return hf


def read_hf(folder: str | Path) -> Checkpoint:
    """A llava_onevision folder as a lazy `Checkpoint` (nothing but headers read yet).

    Keys that are no llava_onevision key stay as they are, so loading reports them as unexpected.
    """
    folder = Path(folder)
    config = read_hf_config(folder)
    tensors, dropped = read_refs(folder)
    return resolve_tied_head(Checkpoint(config, tensors, str(folder), "hf", dropped))


def read_refs(folder: Path) -> tuple[dict[str, TensorRef], list[str]]:
    """The folder's tensors under our keys (`hf_key_to_ours`; keys it does not know stay as they
    are) and the file names left out (SigLIP's pooling head). Used by the `llava` reader too.

    Raises:
        CheckpointError: two file keys that map to one of ours (a folder mixing key layouts).
    """
    files = TensorFolder(folder)
    tensors, dropped = {}, []
    for name in files.names():
        ours = hf_key_to_ours(name) or name
        if ours.startswith(VISION_HEAD_PREFIX):
            dropped.append(name)
            continue
        if ours in tensors:
            raise CheckpointError(f"{folder}: two tensors map to {ours!r} (one of them {name!r}); the folder mixes key layouts")
        tensors[ours] = files.ref(name)
    return tensors, dropped


def load_hf(folder: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None, progress: bool = True):
    """`OneVisionModel` from a llava_onevision folder, built on meta and filled in place.

    Args:
        folder: what `save_pretrained` (ours or transformers') wrote.
        device: where the weights are read to.
        dtype: cast floating weights to this dtype; None keeps the stored dtype.

    Raises:
        CheckpointError: no config/weights, or keys and shapes that do not fit the config.
    """
    return materialize(read_hf(folder), device=device, dtype=dtype, progress=progress)


def write_hf(
    checkpoint: Checkpoint,
    folder: str | Path,
    *,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = "5GB",
    tokenizer=None,
    progress: bool = True,
    strict: bool = True,
) -> list[Path]:
    """Write `checkpoint` in the llava_onevision layout (config, weights, processor files).

    `strict`: refuse settings transformers cannot express (`not_in_transformers`); False
    writes them under `onevision_visual` with a warning.

    Returns:
        The weight files written.
    """
    check_expressible(checkpoint.config, strict, f"{folder}")
    if tokenizer is not None:
        fit_tokenizer(checkpoint.config, tokenizer)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf_config(checkpoint.config, dtype or checkpoint.stored_dtype).save_pretrained(folder)
    refs = {ours_key_to_hf(k): ref for k, ref in checkpoint.tensors.items()}
    written = write_tensors(refs, folder, dtype=dtype, max_shard_size=max_shard_size, progress=progress)
    save_processor(checkpoint.config, folder, tokenizer)
    return written


def save_hf(
    model,
    folder: str | Path,
    *,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = "5GB",
    tokenizer=None,
    progress: bool = True,
    strict: bool = True,
) -> list[Path]:
    """Save `OneVisionModel` as transformers' `LlavaOnevisionForConditionalGeneration.save_pretrained` does.

    Args:
        model: the model to save.
        folder: created if needed; weight files of an earlier save there are replaced.
        dtype: cast floating weights to this dtype (e.g. torch.bfloat16); None keeps them.
        max_shard_size: shard past this size ("5GB", or bytes), with an index file.
        tokenizer: saved alongside (with the processor files, the folder then opens with
            transformers' `AutoProcessor`).
        strict: refuse visual settings transformers' llava_onevision cannot express (video
            newlines per frame or row, pooling strides other than 2, base-only single images,
            a token budget); False writes them for onevision only, with a warning.

    Returns:
        The weight files written.

    Raises:
        CheckpointError: strict and a setting transformers cannot express (each one named).
    """
    checkpoint = Checkpoint(model.config, model_refs(model), "model", "hf")
    return write_hf(
        checkpoint, folder, dtype=dtype, max_shard_size=max_shard_size, tokenizer=tokenizer, progress=progress, strict=strict
    )


def fit_tokenizer(config: ModelConfig, tokenizer) -> None:
    """Add `<image>` / `<video>` to `tokenizer` when missing, then `onevision.tokenizer.check_tokenizer`.

    Raises:
        CheckpointError: their ids are not the config's.
    """
    add_media_tokens(tokenizer)
    try:
        check_tokenizer(tokenizer, config.image_token_id, config.video_token_id)
    except ValueError as error:
        raise CheckpointError(str(error)) from None


def save_processor(config: ModelConfig, folder: str | Path, tokenizer=None) -> None:
    """Write the processor files transformers' `LlavaOnevisionProcessor` reads.

    `preprocessor_config.json` (tile size, grid pinpoints, mean/std 0.5 as SigLIP),
    `video_preprocessor_config.json` (frames resized straight to the tile size),
    `processor_config.json` (tokens per tile, 'full' strategy, AnyRes-Max-N) and, when a
    tokenizer is given, its files and a `generation_config.json` with its eos/pad ids.
    `<image>` / `<video>` are added to the tokenizer (in place) when it lacks them.

    Raises:
        CheckpointError: the tokenizer's `<image>` / `<video>` ids differ from the config's.
    """
    from transformers import GenerationConfig
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    folder = Path(folder)
    size = {"height": config.vision.image_size, "width": config.vision.image_size}
    mean_std = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    image_processor = LlavaOnevisionImageProcessorPil(
        size=size, image_grid_pinpoints=[list(p) for p in config.visual.pinpoints()], **mean_std
    )
    image_processor.save_pretrained(folder)
    # Written as data: transformers' video processor class needs torchvision to be built.
    video = {
        "video_processor_type": "LlavaOnevisionVideoProcessor",
        "processor_class": "LlavaOnevisionProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": size,
        "resample": 3,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        **mean_std,
        "do_sample_frames": False,
        "default_to_square": False,
    }
    side = config.vision.image_size // config.vision.patch_size
    processor = {
        "processor_class": "LlavaOnevisionProcessor",
        "num_image_tokens": side * side,
        "vision_feature_select_strategy": "full",
        "vision_aspect_ratio": f"anyres_max_{config.visual.anyres_max}",
        "image_token": IMAGE_TOKEN,
        "video_token": VIDEO_TOKEN,
    }
    for name, data in (("video_preprocessor_config.json", video), ("processor_config.json", processor)):
        (folder / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        fit_tokenizer(config, tokenizer)
        tokenizer.save_pretrained(folder)
        GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id).save_pretrained(folder)
