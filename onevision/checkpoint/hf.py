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

Our visual settings that `LlavaOnevisionConfig` has no field for (video pooling and newlines,
frames_upbound, the budget) are kept whole under the extra config key `onevision_visual`;
transformers keeps unknown config keys, and ignores this one.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch

from onevision.budget import VisualSettings
from onevision.checkpoint.components import add_media_tokens
from onevision.checkpoint.files import (
    Checkpoint,
    CheckpointError,
    TensorFolder,
    materialize,
    model_refs,
    read_json,
    resolve_tied_head,
    write_tensors,
)
from onevision.model.config import ModelConfig
from onevision.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN
from onevision.utils.dataclass_io import ConfigError, from_dict, to_dict

HF_MODEL_TYPE = "llava_onevision"
HF_ARCHITECTURE = "LlavaOnevisionForConditionalGeneration"
VISUAL_KEY = "onevision_visual"
CONFIG_FILE = "config.json"

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
    hf = LlavaOnevisionConfig.from_dict({k: v for k, v in data.items() if k != VISUAL_KEY})
    try:
        config = ModelConfig.from_hf(hf)
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from error
    # LlavaOnevisionConfig ties when either the top level or text_config says so.
    text = dataclasses.replace(config.text, tie_word_embeddings=bool(hf.tie_word_embeddings))
    config = dataclasses.replace(config, text=text)
    if VISUAL_KEY in data:
        try:
            visual = from_dict(VisualSettings, data[VISUAL_KEY], where=VISUAL_KEY)
        except (ConfigError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: {error}") from error
        config = dataclasses.replace(config, visual=visual)
    return config


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
    files = TensorFolder(folder)
    tensors = {}
    for name in files.names():
        ours = hf_key_to_ours(name) or name
        if ours in tensors:
            raise CheckpointError(f"{folder}: two tensors map to {ours!r} (one of them {name!r}); the folder mixes key layouts")
        tensors[ours] = files.ref(name)
    return resolve_tied_head(Checkpoint(config, tensors, str(folder), "hf"))


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
) -> list[Path]:
    """Write `checkpoint` in the llava_onevision layout (config, weights, processor files).

    Returns:
        The weight files written.
    """
    if tokenizer is not None:
        check_tokenizer(checkpoint.config, tokenizer)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stored = next((r.dtype for r in checkpoint.tensors.values() if r.dtype.is_floating_point), None)
    hf_config(checkpoint.config, dtype or stored).save_pretrained(folder)
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
) -> list[Path]:
    """Save `OneVisionModel` as transformers' `LlavaOnevisionForConditionalGeneration.save_pretrained` does.

    Args:
        model: the model to save.
        folder: created if needed; weight files of an earlier save there are replaced.
        dtype: cast floating weights to this dtype (e.g. torch.bfloat16); None keeps them.
        max_shard_size: shard past this size ("5GB", or bytes), with an index file.
        tokenizer: saved alongside (with the processor files, the folder then opens with
            transformers' `AutoProcessor`).

    Returns:
        The weight files written.
    """
    checkpoint = Checkpoint(model.config, model_refs(model), "model", "hf")
    return write_hf(checkpoint, folder, dtype=dtype, max_shard_size=max_shard_size, tokenizer=tokenizer, progress=progress)


def check_tokenizer(config: ModelConfig, tokenizer) -> None:
    """Add `<image>` / `<video>` to `tokenizer` when missing; raise if their ids are not the config's."""
    ids = add_media_tokens(tokenizer)
    if ids != (config.image_token_id, config.video_token_id):
        raise CheckpointError(
            f"the tokenizer's {IMAGE_TOKEN}/{VIDEO_TOKEN} ids {ids[0]}/{ids[1]} differ from "
            f"the model's image_token_id/video_token_id {config.image_token_id}/{config.video_token_id}"
        )


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
        check_tokenizer(config, tokenizer)
        tokenizer.save_pretrained(folder)
        GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id).save_pretrained(folder)
