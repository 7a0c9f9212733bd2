"""The original LLaVA `llava_llama` layout (haotian-liu/LLaVA: LLaVA v1 and LLaVA-1.5 releases): read and write.

Keys, ours <-> the original (`LlavaLlamaForCausalLM.state_dict()` as its trainer saves it):

    projector.linear_1.*              model.mm_projector.*    ('linear')
    projector.linear_{i+1}.*          model.mm_projector.{2i}.* ('mlpNx_gelu': Linear, GELU, Linear, ...)
    language_model.model.*            model.* (embed_tokens, layers, norm)
    language_model.lm_head.weight     lm_head.weight
    vision_tower.vision_model.*       from the CLIP folder `mm_vision_tower` (`vision_model.*` keys), or
                                      model.vision_tower.vision_tower.vision_model.* when the file holds them

The original saves no tower (it loads `CLIPVisionModel.from_pretrained(mm_vision_tower)`), so the
reader takes it from `vision_dir`, else the `mm_vision_tower` path, else `<folder>/vision_tower`;
the writer puts the tower in `<folder>/vision_tower` (a `CLIPVisionModel` folder) and names its
absolute path in `mm_vision_tower`. Config fields: `llava_original_fields.py` (every `mm_*` field
the original reads, mapped or refused by name) and `onevision.model.llava_fields` (LlamaConfig's).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from onevision.checkpoint.components import read_clip_folder, resize_vocab_refs
from onevision.checkpoint.files import (
    Checkpoint,
    CheckpointError,
    TensorFolder,
    model_refs,
    read_json,
    resolve_tied_head,
    write_tensors,
)
from onevision.checkpoint.hf import CONFIG_FILE, VISUAL_KEY
from onevision.checkpoint.llava_original_fields import FIELDS, check_refused_fields, model_fields, original_fields, visual_from_original
from onevision.model.config import ModelConfig
from onevision.model.hf_fields import LEGACY_KEYS, warn_unknown
from onevision.model.llava_fields import known_fields, llama_text_from_hf
from onevision.utils.dataclass_io import ConfigError, from_dict, to_dict

ORIGINAL_MODEL_TYPE = "llava_llama"
ORIGINAL_ARCHITECTURE = "LlavaLlamaForCausalLM"
TOWER_FOLDER = "vision_tower"
_TOWER = "model.vision_tower.vision_tower.vision_model."
_PROJECTOR = re.compile(r"^model\.mm_projector\.(?:(\d+)\.)?(weight|bias)$")


def is_original_config(data: dict) -> bool:
    """A config.json of the original layout: model_type 'llava_llama', or 'llava' naming LlavaLlamaForCausalLM."""
    if data.get("model_type") == ORIGINAL_MODEL_TYPE:
        return True
    return data.get("model_type") == "llava" and ORIGINAL_ARCHITECTURE in (data.get("architectures") or [])


def _tower_folder(data: dict, folder: Path, vision_dir: str | Path | None) -> Path:
    if vision_dir is not None:
        return Path(vision_dir)
    named = data.get("mm_vision_tower", data.get("vision_tower"))
    for candidate in ([Path(named), folder / named] if named else []) + [folder / TOWER_FOLDER]:
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise CheckpointError(
        f"{folder / CONFIG_FILE}: mm_vision_tower {named!r} is no CLIP folder here (nor is {folder / TOWER_FOLDER}); "
        "pass vision_dir= the CLIP folder (`CLIPVisionModel.save_pretrained` or a CLIPModel release)"
    )


def read_original_config(folder: str | Path, vision_dir: str | Path | None = None) -> tuple[ModelConfig, Path]:
    """Our `ModelConfig` from a `llava_llama` config.json, and the CLIP folder the tower comes from.

    Raises:
        CheckpointError: another model_type, a field we cannot honour (named), a missing CLIP folder.
    """
    from transformers import LlamaConfig

    folder = Path(folder)
    path = folder / CONFIG_FILE
    data = read_json(path)
    if not is_original_config(data):
        raise CheckpointError(f"{path}: model_type {data.get('model_type')!r} is not {ORIGINAL_MODEL_TYPE!r} (or 'llava' with {ORIGINAL_ARCHITECTURE!r})")
    check_refused_fields(data, str(path))
    warn_unknown(data, known_fields("llama") | set(FIELDS) | set(LEGACY_KEYS), str(path))
    tower_dir = _tower_folder(data, folder, vision_dir)
    vision, _, _ = read_clip_folder(tower_dir)
    if data.get("mm_hidden_size", vision.hidden_size) != vision.hidden_size:
        raise CheckpointError(f"{path}: mm_hidden_size {data['mm_hidden_size']} differs from the CLIP width {vision.hidden_size} ({tower_dir})")
    known = set(LlamaConfig().to_dict()) | {"rope_theta", "rope_scaling"}
    try:
        text = llama_text_from_hf(LlamaConfig(**{k: v for k, v in data.items() if k in known and k not in ("model_type", "architectures")}), where="")
        fields = model_fields(data)
        visual = visual_from_original(data, vision.image_size, vision.patch_size)
        if VISUAL_KEY in data:
            ours = from_dict(type(visual), {**visual.to_dict(), **data[VISUAL_KEY]}, where=VISUAL_KEY)
            if ours.base_image != visual.base_image:
                raise ValueError(f"{VISUAL_KEY}.base_image {ours.base_image!r} disagrees with image_aspect_ratio {data.get('image_aspect_ratio')!r}")
            visual = ours
        config = ModelConfig(
            vision=vision,
            text=text,
            image_token_id=data.get("image_token_index", text.vocab_size),
            video_token_id=data.get("video_token_index"),
            visual=visual,
            **fields,
        )
    except (ConfigError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: {error}") from error
    return config, tower_dir


def read_original(folder: str | Path, vision_dir: str | Path | None = None) -> Checkpoint:
    """A `llava_llama` folder (plus its CLIP folder) as a lazy `Checkpoint`.

    When the placeholder id lies past the vocabulary (the original's configs carry none), the
    embedding and head grow to cover it, the new row the mean of the others.
    """
    folder = Path(folder)
    config, tower_dir = read_original_config(folder, vision_dir)
    _, tower, dropped = read_clip_folder(tower_dir)
    tensors = {"vision_tower.vision_model." + k: ref for k, ref in tower.items()}
    files = TensorFolder(folder)
    for name in files.names():
        projector = _PROJECTOR.match(name)
        if projector:
            index, kind = projector.groups()
            ours = f"projector.linear_{1 if index is None else int(index) // 2 + 1}.{kind}"
        elif name.startswith(_TOWER):
            ours = "vision_tower.vision_model." + name[len(_TOWER) :]  # a trained tower replaces the folder's
        elif name.endswith(".inv_freq"):
            dropped.append(name)
            continue
        elif name.startswith("lm_head."):
            ours = "language_model." + name
        elif name.startswith("model."):
            ours = "language_model." + name
        else:
            ours = name
        tensors[ours] = files.ref(name)
    checkpoint = resolve_tied_head(Checkpoint(config, tensors, str(folder), "llava-original", dropped))
    needed = config.image_token_id + 1
    if needed > config.text.vocab_size:
        checkpoint = resize_vocab_refs(checkpoint, needed)
    return checkpoint


def original_config(config: ModelConfig, tower_path: str, dtype: torch.dtype | None = None) -> dict:
    """The `llava_llama` config.json we write for `config`."""
    from onevision.model.onevision import llama_config

    fields = original_fields(config)
    text = llama_config(config.text).to_dict()
    for key in ("model_type", "architectures", "transformers_version", "dtype"):
        text.pop(key, None)
    data = {
        **text,
        "architectures": [ORIGINAL_ARCHITECTURE],
        "model_type": ORIGINAL_MODEL_TYPE,
        "mm_vision_tower": tower_path,
        **fields,
        "image_token_index": config.image_token_id,
        VISUAL_KEY: to_dict(config.visual),
    }
    if config.video_token_id is not None:
        data["video_token_index"] = config.video_token_id
    if dtype is not None:
        data["torch_dtype"] = str(dtype).removeprefix("torch.")
    return data


def ours_key_to_original(key: str, depth: int) -> str:
    """The original key for our `key` (`depth`: the projector's linear layers)."""
    match = re.match(r"^projector\.linear_(\d+)\.(weight|bias)$", key)
    if match:
        index, kind = int(match.group(1)), match.group(2)
        return f"model.mm_projector.{kind}" if depth == 1 else f"model.mm_projector.{2 * (index - 1)}.{kind}"
    if key.startswith("language_model."):
        return key[len("language_model.") :]
    raise KeyError(f"{key!r} has no place in the llava_llama layout")


def write_original(
    checkpoint: Checkpoint,
    folder: str | Path,
    *,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = "5GB",
    tokenizer=None,
    progress: bool = True,
) -> list[Path]:
    """Write `checkpoint` in the `llava_llama` layout, the CLIP tower in `<folder>/vision_tower`.

    Raises:
        CheckpointError: a part or setting the original cannot express, named.
    """
    from onevision.model.config import projector_depth
    from onevision.model.vision import clip_config

    config = checkpoint.config
    folder = Path(folder)
    tower_dir = folder / TOWER_FOLDER
    data = original_config(config, str(tower_dir.resolve()), dtype or checkpoint.stored_dtype)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    depth = projector_depth(config.projector_type)
    main = {ours_key_to_original(k, depth): r for k, r in checkpoint.tensors.items() if not k.startswith("vision_tower.")}
    written = write_tensors(main, folder, dtype=dtype, max_shard_size=max_shard_size, progress=progress)
    clip = clip_config(config.vision)
    clip._attn_implementation = None
    clip.architectures = ["CLIPVisionModel"]
    clip.save_pretrained(tower_dir)
    prefix = "vision_tower.vision_model."
    tower = {"vision_model." + k[len(prefix) :]: r for k, r in checkpoint.tensors.items() if k.startswith(prefix)}
    written += write_tensors(tower, tower_dir, dtype=dtype, max_shard_size=max_shard_size, progress=progress)
    _write_clip_processor(config, tower_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return written


def _write_clip_processor(config: ModelConfig, folder: Path) -> None:
    """The CLIPImageProcessor file the original loads beside the tower (shortest side, centre crop, CLIP mean/std)."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from onevision.processing.normalize import CLIP

    side = config.vision.image_size
    CLIPImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}, image_mean=list(CLIP.mean), image_std=list(CLIP.std)
    ).save_pretrained(folder)


def save_original(model, folder: str | Path, *, dtype: torch.dtype | None = None, progress: bool = True) -> list[Path]:
    """Save a LLaVA v1 / 1.5 `OneVisionModel` in the original `llava_llama` layout."""
    checkpoint = Checkpoint(model.config, model_refs(model), "model", "llava-original")
    return write_original(checkpoint, folder, dtype=dtype, progress=progress)
