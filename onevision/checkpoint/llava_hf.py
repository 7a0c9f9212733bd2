"""transformers' `llava` layout (LlavaForConditionalGeneration, the llava-hf releases): read and write.

Keys, ours <-> the file (as the llava-hf releases hold them, which every transformers reads):

    vision_tower.vision_model.*       vision_tower.vision_model.*   (CLIPVisionModel or SiglipVisionModel)
    projector.linear_{1,2}.*          multi_modal_projector.linear_{1,2}.*
    language_model.model.*            language_model.model.*       (LlamaModel or Qwen2Model)
    language_model.lm_head.weight     language_model.lm_head.weight (absent when tied)

Reading also accepts the other layouts transformers 5.x converts on load (`model.vision_tower.*`,
`model.multi_modal_projector.*`, `model.language_model.*`, `lm_head.weight`), as
`onevision.checkpoint.hf` does for llava_onevision.

`llava` has no image newline, no video, one image at base resolution and a 2-layer projector:
a model with a newline, another projector or settings the processor cannot express is refused
by name (`not_in_llava`). Pixels: `preprocessor_config.json`'s `do_pad` (LLaVA-1.5's
pad-to-square with the mean colour) or not (shortest side resized, centre crop: LLaVA v1 and
the llava-hf 1.5 releases), mean / std / filter as `ImageNormalization.from_pretrained_dir` reads
them. Every config field is honoured, refused or inert as `onevision.model.llava_fields` lists it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from onevision.budget import VisualSettings
from onevision.checkpoint.files import (
    Checkpoint,
    CheckpointError,
    model_refs,
    read_json,
    resolve_tied_head,
    write_tensors,
)
from onevision.checkpoint.hf import CONFIG_FILE, VISUAL_KEY, read_refs
from onevision.model.config import ModelConfig
from onevision.model.hf_fields import known_fields as onevision_fields
from onevision.model.hf_fields import text_from_hf, vision_from_hf, warn_unknown
from onevision.model.llava_fields import (
    TEXT_MODEL_TYPES,
    TOWER_MODEL_TYPES,
    check_llava_config,
    clip_vision_from_hf,
    known_fields,
    llama_text_from_hf,
)
from onevision.utils.dataclass_io import ConfigError, from_dict, to_dict

LLAVA_HF_MODEL_TYPE = "llava"
LLAVA_HF_ARCHITECTURE = "LlavaForConditionalGeneration"
PREPROCESSOR_FILE = "preprocessor_config.json"
VIDEO_KEY = "video_token_index"
"""Our extra config key for a model that also takes video (transformers' llava ignores it)."""
# Architectures of the original code's configs, which also say model_type 'llava'.
ORIGINAL_ARCHITECTURES = ("LlavaLlamaForCausalLM", "LlavaQwenForCausalLM", "LlavaMistralForCausalLM", "LlavaMptForCausalLM")

logger = logging.getLogger(__name__)


def is_llava_hf_config(data: dict) -> bool:
    """A transformers `llava` config.json (not the original code's, which also says model_type 'llava')."""
    architectures = data.get("architectures") or []
    return data.get("model_type") == LLAVA_HF_MODEL_TYPE and not any(a in ORIGINAL_ARCHITECTURES for a in architectures)


def ours_key_to_llava_hf(key: str) -> str:
    """The key llava-hf files hold for our `key`."""
    if key.startswith("projector."):
        return "multi_modal_projector." + key[len("projector.") :]
    if key.startswith(("vision_tower.vision_model.", "language_model.model.", "language_model.lm_head.")):
        return key
    raise KeyError(f"{key!r} has no place in transformers' llava layout")


def not_in_llava(config: ModelConfig) -> list[str]:
    """Our settings transformers' `llava` cannot express, one line each (empty: it reads the same model)."""
    problems = []
    if config.use_image_newline:
        problems.append("use_image_newline=True (llava has no image_newline)")
    if config.projector_type != "mlp2x_gelu":
        problems.append(f"projector_type={config.projector_type!r} (llava's projector is linear_1, act, linear_2: 'mlp2x_gelu')")
    visual = config.visual
    fixed = {
        "single_image": ("base", "llava takes every image at base resolution"),
        "base_image": (("pad", "crop"), "llava's processor pads to a square (do_pad) or resizes the shortest side and centre-crops"),
        "max_visual_tokens": (None, "llava has no token budget"),
    }
    for name, (allowed, what) in fixed.items():
        value = getattr(visual, name)
        if value not in (allowed if isinstance(allowed, tuple) else (allowed,)):
            problems.append(f"visual.{name}={value!r} ({what})")
    return problems


def llava_hf_config(config: ModelConfig, dtype: torch.dtype | None = None):
    """transformers' `LlavaConfig` for `config` (architectures and dtype set), our visual settings kept under `onevision_visual`.

    Raises:
        CheckpointError: a part or setting `llava` cannot express (`not_in_llava`), each named.
    """
    from transformers import LlavaConfig

    from onevision.model.onevision import decoder_config
    from onevision.model.vision import tower_config

    problems = not_in_llava(config)
    if problems:
        raise CheckpointError("transformers' llava cannot express " + "; ".join(problems))
    vision = tower_config(config.vision_tower, config.vision)
    text = decoder_config(config)
    for sub in (vision, text):
        sub._attn_implementation = None
    layer = config.vision_feature_layer
    hf = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=config.image_token_id,
        projector_hidden_act=config.projector_act,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        vision_feature_layer=layer if isinstance(layer, int) else list(layer),
        image_seq_length=config.visual.base_tokens,
        multimodal_projector_bias=True,
        tie_word_embeddings=config.text.tie_word_embeddings,
    )
    hf.architectures = [LLAVA_HF_ARCHITECTURE]
    if dtype is not None:
        hf.dtype = str(dtype).removeprefix("torch.")
    setattr(hf, VISUAL_KEY, to_dict(config.visual))
    if config.video_token_id is not None:
        setattr(hf, VIDEO_KEY, config.video_token_id)
    return hf


def config_from_llava_hf(data: dict, where: str, processor: dict | None = None) -> ModelConfig:
    """Our `ModelConfig` from a `llava` config dict (and the folder's preprocessor config, if any).

    Raises:
        CheckpointError: a field we cannot honour (named), or `onevision_visual` that does not load.
    """
    from transformers import LlavaConfig

    warn_unknown(data, known_fields("llava") | {VIDEO_KEY}, where)
    try:
        hf = LlavaConfig.from_dict({k: v for k, v in data.items() if k not in (VISUAL_KEY, VIDEO_KEY)})
        check_llava_config(hf)
        tower = TOWER_MODEL_TYPES[hf.vision_config.model_type]
        text_model = TEXT_MODEL_TYPES[hf.text_config.model_type]
        for key, kind in (("vision_config", "clip" if tower == "clip" else "siglip"), ("text_config", text_model)):
            if isinstance(data.get(key), dict):
                fields = known_fields(kind) if kind in ("clip", "llama") else onevision_fields(kind)
                warn_unknown(data[key], fields, f"{where}: {key}")
        vision = clip_vision_from_hf(hf.vision_config) if tower == "clip" else vision_from_hf(hf.vision_config)
        text = llama_text_from_hf(hf.text_config) if text_model == "llama" else text_from_hf(hf.text_config)
        text = dataclasses.replace(text, tie_word_embeddings=bool(hf.tie_word_embeddings))
        visual = VisualSettings(
            image_size=vision.image_size,
            patch_size=vision.patch_size,
            single_image="base",
            base_image="pad" if (processor or {}).get("do_pad") else "crop",
            video_newline="none",
        )
        if VISUAL_KEY in data:
            visual = from_dict(VisualSettings, data[VISUAL_KEY], where=VISUAL_KEY)
        layer = hf.vision_feature_layer
        return ModelConfig(
            vision=vision,
            text=text,
            vision_feature_layer=layer if isinstance(layer, int) else tuple(layer),
            projector_act=hf.projector_hidden_act,
            image_token_id=hf.image_token_index,
            video_token_id=data.get(VIDEO_KEY),
            visual=visual,
            vision_tower=tower,
            text_model=text_model,
            vision_feature_select_strategy=hf.vision_feature_select_strategy,
            projector_type="mlp2x_gelu",
            use_image_newline=False,
        )
    except (ConfigError, TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: {error}") from error


def read_llava_hf_config(folder: str | Path) -> ModelConfig:
    """Our `ModelConfig` from a `llava` folder's config.json (and preprocessor_config.json)."""
    path = Path(folder) / CONFIG_FILE
    data = read_json(path)
    if not is_llava_hf_config(data):
        raise CheckpointError(f"{path}: not a transformers llava config (model_type {data.get('model_type')!r}, architectures {data.get('architectures')})")
    processor_path = Path(folder) / PREPROCESSOR_FILE
    processor = read_json(processor_path) if processor_path.is_file() else None
    config = config_from_llava_hf(data, str(path), processor)
    if processor is not None:
        check_processor(processor, config, str(processor_path))
    return config


def check_processor(processor: dict, config: ModelConfig, where: str) -> None:
    """Refuse a preprocessor config whose pixels differ from what the planner and `onevision.processing`
    make of `config.visual` (each field named): shortest side to the tower's size, centre crop of
    that size, padding to a square exactly when base_image is 'pad'."""
    side = config.vision.image_size
    crop = processor.get("crop_size") or {}
    size = processor.get("size") or {}
    if not processor.get("do_resize", True) or not processor.get("do_center_crop", True):
        raise CheckpointError(f"{where}: do_resize and do_center_crop must be true (the tower takes {side}x{side} pixels)")
    if crop and (crop.get("height"), crop.get("width")) != (side, side):
        raise CheckpointError(f"{where}: crop_size {crop} is not the tower's {side}x{side}")
    if (size and set(size) != {"shortest_edge"}) or size.get("shortest_edge", side) != side:
        raise CheckpointError(f"{where}: size {size} is not {{'shortest_edge': {side}}} (the tower's input)")
    if bool(processor.get("do_pad", False)) != (config.visual.base_image == "pad"):
        raise CheckpointError(
            f"{where}: do_pad {processor.get('do_pad', False)!r} disagrees with the config's visual.base_image "
            f"{config.visual.base_image!r} (pad to a square exactly when 'pad')"
        )


def read_llava_hf(folder: str | Path) -> Checkpoint:
    """A `llava` folder as a lazy `Checkpoint` (SigLIP pooling-head weights, when present, left out)."""
    folder = Path(folder)
    config = read_llava_hf_config(folder)
    tensors, dropped = read_refs(folder)
    return resolve_tied_head(Checkpoint(config, tensors, str(folder), "llava-hf", dropped))


def write_llava_hf(
    checkpoint: Checkpoint,
    folder: str | Path,
    *,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = "5GB",
    tokenizer=None,
    progress: bool = True,
) -> list[Path]:
    """Write `checkpoint` as `LlavaForConditionalGeneration.save_pretrained` does (config, weights, processor).

    Raises:
        CheckpointError: a part or setting `llava` cannot express, named.
    """
    folder = Path(folder)
    hf = llava_hf_config(checkpoint.config, dtype or checkpoint.stored_dtype)
    folder.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(folder)
    refs = {ours_key_to_llava_hf(k): ref for k, ref in checkpoint.tensors.items()}
    written = write_tensors(refs, folder, dtype=dtype, max_shard_size=max_shard_size, progress=progress)
    save_llava_processor(checkpoint.config, folder, tokenizer)
    return written


def save_llava_hf(model, folder: str | Path, *, dtype: torch.dtype | None = None, tokenizer=None, progress: bool = True) -> list[Path]:
    """Save a LLaVA-family `OneVisionModel` in transformers' `llava` layout."""
    checkpoint = Checkpoint(model.config, model_refs(model), "model", "llava-hf")
    return write_llava_hf(checkpoint, folder, dtype=dtype, tokenizer=tokenizer, progress=progress)


def save_llava_processor(config: ModelConfig, folder: str | Path, tokenizer=None) -> None:
    """Write `preprocessor_config.json` and `processor_config.json` as transformers' `LlavaProcessor` reads them.

    The image processor pads to a square with the mean colour when `visual.base_image` is 'pad',
    else resizes the shortest side and centre-crops; CLIP's mean and std for a CLIP tower,
    SigLIP's 0.5 otherwise. The processor expands `<image>` to the patch count (+1 for CLIP's
    class token, -1 again under strategy 'default'). A tokenizer is saved alongside.
    """
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    from onevision.processing.normalize import TOWER_NORMALIZATION

    norm = TOWER_NORMALIZATION[config.vision_tower]
    side = config.vision.image_size
    LlavaImageProcessorPil(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        do_pad=config.visual.base_image == "pad",
        image_mean=list(norm.mean),
        image_std=list(norm.std),
    ).save_pretrained(folder)
    processor = {
        "processor_class": "LlavaProcessor",
        "patch_size": config.vision.patch_size,
        "vision_feature_select_strategy": config.vision_feature_select_strategy,
        "num_additional_image_tokens": int(config.vision_tower == "clip"),
        "image_token": "<image>",
    }
    (Path(folder) / "processor_config.json").write_text(json.dumps(processor, indent=2, sort_keys=True) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
