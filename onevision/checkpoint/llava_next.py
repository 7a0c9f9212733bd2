"""The original LLaVA-NeXT `llava_qwen` layout (the lmms-lab llava-onevision-qwen2-* releases).

Keys, ours <-> LLaVA-NeXT:

    vision_tower.vision_model.*       model.vision_tower.vision_tower.vision_model.*
    projector.linear_1.* / linear_2.* model.mm_projector.0.* / model.mm_projector.2.*
    image_newline                     model.image_newline
    language_model.model.*            model.* (embed_tokens, layers, norm)
    language_model.lm_head.weight     lm_head.weight (absent when tied)

The vision tower. `config.json` names SigLIP by hub id (`mm_vision_tower`,
"google/siglip-so400m-patch14-384") instead of carrying its config. LLaVA-NeXT's
`SigLipVisionTower` loads all of SigLIP's 27 layers, deletes the last one
(`del self.vision_tower.vision_model.encoder.layers[-1:]`), replaces the pooling head by an
identity and takes `hidden_states[-1]` of what is left; `mm_vision_select_layer` (-2 in the
released configs) is not read by that tower, and -2 over 27 layers is the same depth. So a
SigLIP with L layers becomes our tower of L-1 layers with `vision_feature_layer=-1`, and the
files' tensors of layer L-1 and of the head, when present, are dropped. The SigLIP shape is
taken from a `vision_config` key in config.json (we write one), else from the folder given as
`vision_dir`, else the so400m-patch14-384 shape when the config names that tower.

Visual settings: every `mm_*` / layout field the original reads is honoured as it applies it,
or refused by name; `llava_next_fields.py` holds the mapping and the commit followed. We also
write `onevision_visual` (all our visual settings, checked against the `mm_*` fields when read)
and `image_token_index` / `video_token_index`, which the original code ignores.

Fields that act around the weights at inference (the builder's `resize_token_embeddings(len(tokenizer))`,
`tokenizer_model_max_length`, `add_time_instruction`) are read by `read_llava_next_runtime` into an
`OriginalRuntime`, which `onevision.infer.OneVision` honours; the weights are kept as stored.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import torch

from onevision.budget import VisualSettings
from onevision.checkpoint.components import read_vision_config, resize_vocab_refs
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
from onevision.checkpoint.hf import CONFIG_FILE, VISUAL_KEY
from onevision.checkpoint.llava_next_fields import (
    check_refused_fields,
    llava_fields,
    reconcile,
    visual_from_llava,
)
from onevision.model.config import SIGLIP_SO400M, ModelConfig, VisionConfig
from onevision.utils.dataclass_io import ConfigError, from_dict, to_dict

LLAVA_NEXT_MODEL_TYPE = "llava_qwen"
LLAVA_NEXT_ARCHITECTURE = "LlavaQwenForCausalLM"
# The released lmms-lab configs say model_type "llava" (a copy of llava-onevision-qwen2-7b-ov's
# config.json is in PaddleMIX tests/models/test_llava.py; LLaVA-NeXT issue #350 quotes the warning
# "You are using a model of type llava to instantiate a model of type llava_qwen"): LLaVA-NeXT
# loads by class (`LlavaQwenForCausalLM.from_pretrained`), so only the architecture tells them apart
# from transformers' own "llava" (LlavaForConditionalGeneration).
LLAVA_NEXT_RELEASED_MODEL_TYPE = "llava"


def is_llava_next_config(data: dict) -> bool:
    """A config.json of the original layout: model_type 'llava_qwen', or 'llava' naming LlavaQwenForCausalLM."""
    model_type = data.get("model_type")
    if model_type == LLAVA_NEXT_MODEL_TYPE:
        return True
    return model_type == LLAVA_NEXT_RELEASED_MODEL_TYPE and LLAVA_NEXT_ARCHITECTURE in (data.get("architectures") or [])

SO400M_TOWER = "google/siglip-so400m-patch14-384"

_TOWER = "model.vision_tower.vision_tower.vision_model."
_LAYER = re.compile(re.escape(_TOWER) + r"encoder\.layers\.(\d+)\.")
_FROM_LLAVA = (
    (_TOWER, "vision_tower.vision_model."),
    ("model.mm_projector.0.", "projector.linear_1."),
    ("model.mm_projector.2.", "projector.linear_2."),
    ("model.image_newline", "image_newline"),
    ("lm_head.", "language_model.lm_head."),
    ("model.", "language_model.model."),
)
_TO_LLAVA = tuple((ours, theirs) for theirs, ours in _FROM_LLAVA)


def _vision_shape(data: dict, path: Path, vision_dir: str | Path | None) -> VisionConfig:
    """SigLIP's full shape (all its layers, before LLaVA-NeXT deletes the last one)."""
    if vision_dir is not None:
        return read_vision_config(read_json(Path(vision_dir) / CONFIG_FILE), where=str(Path(vision_dir) / CONFIG_FILE))
    if "vision_config" in data:
        return read_vision_config(data["vision_config"], where=f"{path} vision_config")
    tower = str(data.get("mm_vision_tower", data.get("vision_tower", "")))
    if tower.rstrip("/").endswith("siglip-so400m-patch14-384"):
        return dataclasses.replace(SIGLIP_SO400M, num_hidden_layers=SIGLIP_SO400M.num_hidden_layers + 1)
    raise CheckpointError(
        f"{path}: mm_vision_tower {tower!r} is not {SO400M_TOWER!r} and the config has no vision_config; "
        "pass vision_dir= a folder holding that SigLIP's config.json"
    )


def read_llava_next_config(folder: str | Path, vision_dir: str | Path | None = None) -> ModelConfig:
    """Our `ModelConfig` from a `llava_qwen` config.json (see the module docstring for the mapping).

    Raises:
        CheckpointError: another model_type, a projector we do not have, an unknown SigLIP
            without a config, a layout field the original applies in a way we do not reproduce
            (named), or `onevision_visual` disagreeing with the `mm_*` fields.
    """
    from transformers import LlavaOnevisionConfig, Qwen2Config

    from onevision.model.vision import siglip_config

    path = Path(folder) / CONFIG_FILE
    data = read_json(path)
    if not is_llava_next_config(data):
        raise CheckpointError(
            f"{path}: model_type is {data.get('model_type')!r} (architectures {data.get('architectures')}), expected "
            f"{LLAVA_NEXT_MODEL_TYPE!r}, or {LLAVA_NEXT_RELEASED_MODEL_TYPE!r} with {LLAVA_NEXT_ARCHITECTURE!r}"
        )
    check_refused_fields(data, str(path))
    projector = data.get("mm_projector_type", "mlp2x_gelu")
    if projector != "mlp2x_gelu":
        raise CheckpointError(f"{path}: mm_projector_type {projector!r} is not supported (only 'mlp2x_gelu')")
    full = _vision_shape(data, path, vision_dir)
    if full.num_hidden_layers < 2:
        raise CheckpointError(f"{path}: a {full.num_hidden_layers}-layer SigLIP leaves no layer once the last is deleted")
    if data.get("mm_hidden_size", full.hidden_size) != full.hidden_size:
        raise CheckpointError(f"{path}: mm_hidden_size {data['mm_hidden_size']} differs from the SigLIP width {full.hidden_size}")
    vision = dataclasses.replace(full, num_hidden_layers=full.num_hidden_layers - 1)

    # LlavaQwenForCausalLM.__init__ sets config.rope_scaling = None: the original never scales RoPE.
    known = set(Qwen2Config().to_dict()) | {"rope_theta"}
    skip = ("model_type", "architectures", "rope_scaling", "rope_parameters")
    text = Qwen2Config(**{k: v for k, v in data.items() if k in known and k not in skip})
    defaults = ModelConfig()
    hf = LlavaOnevisionConfig(
        text_config=text,
        vision_config=siglip_config(vision, attn_implementation=None),
        image_token_index=data.get("image_token_index", defaults.image_token_id),
        video_token_index=data.get("video_token_index", defaults.video_token_id),
        vision_feature_layer=-1,
        image_grid_pinpoints=[[vision.image_size, vision.image_size]],
    )
    config = ModelConfig.from_hf(hf)
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, tie_word_embeddings=bool(data.get("tie_word_embeddings", False))))

    visual = visual_from_llava(data, str(path), vision.image_size, vision.patch_size)
    if VISUAL_KEY in data:
        # Keys a folder written before a setting existed lacks take what the mm_* fields say.
        try:
            ours = from_dict(VisualSettings, {**visual.to_dict(), **data[VISUAL_KEY]}, where=VISUAL_KEY)
        except (ConfigError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: {error}") from error
        visual = reconcile(visual, ours, str(path))
    return dataclasses.replace(config, visual=visual)


# LLaVA-NeXT llava/constants.py DEFAULT_IMAGE_PATCH_TOKEN: what builder.py adds to the tokenizer.
IMAGE_PATCH_TOKEN = "<im_patch>"


@dataclasses.dataclass(frozen=True)
class OriginalRuntime:
    """What LLaVA-NeXT applies around an original folder's weights at inference, outside `ModelConfig`.

    `read_llava_next_runtime` reads it from config.json; `OneVision` honours every field (its
    `InferenceConfig` fields of the same meaning override them). Followed: LLaVA-NeXT at df179663
    (`llava/model/builder.py` `load_pretrained_model`, `llava/model/llava_arch.py`, `llava/train/train.py`).
    """

    max_length: int | None = None
    """`tokenizer_model_max_length`: `prepare_inputs_labels_for_multimodal` (llava_arch.py) cuts every
    embedded sequence that has media, visual tokens included, to this length; None: no cut."""
    time_instruction: bool = False
    """`add_time_instruction`: LLaVA-Video's prompt tells the clip's duration and frame times."""
    adds_patch_token: bool = True
    """`mm_use_im_patch_token` (builder.py reads it with default True): `<im_patch>` is added to the
    tokenizer before `model.resize_token_embeddings(len(tokenizer))`."""
    where: str = ""
    """The config.json read, for messages."""

    def vocab_rows(self, tokenizer) -> int:
        """Rows of embedding and head the builder keeps: `len(tokenizer)` once `<im_patch>` is added.

        `load_pretrained_model` resizes to exactly that (151,646 for the Qwen2 tokenizer against
        152,064 rows stored in the 7B), so the original's logits, softmax and argmax cover only
        those ids.
        """
        extra = int(self.adds_patch_token and IMAGE_PATCH_TOKEN not in tokenizer.get_vocab())
        return len(tokenizer) + extra


def read_llava_next_runtime(folder: str | Path) -> OriginalRuntime:
    """The `OriginalRuntime` of an original folder's config.json.

    Raises:
        CheckpointError: tokenizer_model_max_length is not a positive whole number (or null), or
            add_time_instruction / mm_use_im_patch_token is not true or false; the message names it.
    """
    path = Path(folder) / CONFIG_FILE
    data = read_json(path)
    limit = data.get("tokenizer_model_max_length")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise CheckpointError(f"{path}: tokenizer_model_max_length {limit!r} is not a positive whole number (or null)")
    flags = {}
    for field, default in (("add_time_instruction", False), ("mm_use_im_patch_token", True)):
        value = data.get(field)
        if value is not None and not isinstance(value, bool):
            raise CheckpointError(f"{path}: {field} {value!r} must be true or false")
        flags[field] = default if value is None else value
    return OriginalRuntime(limit, flags["add_time_instruction"], flags["mm_use_im_patch_token"], str(path))


def read_llava_next(folder: str | Path, vision_dir: str | Path | None = None) -> Checkpoint:
    """A `llava_qwen` folder as a lazy `Checkpoint` (the deleted layer and the head dropped).

    When the placeholder ids lie outside the vocabulary (the released configs keep Qwen2's
    151647 rows, and `<video>` is 151647), the embedding and head grow to cover them, new rows
    set to the mean of the existing ones.
    """
    folder = Path(folder)
    config = read_llava_next_config(folder, vision_dir)
    files = TensorFolder(folder)
    kept = config.vision.num_hidden_layers
    tensors: dict[str, TensorRef] = {}
    dropped = []
    for name in files.names():
        layer = _LAYER.match(name)
        if name.startswith(_TOWER + "head.") or name.endswith(".inv_freq") or (layer and int(layer.group(1)) >= kept):
            dropped.append(name)
            continue
        ours = next((new + name[len(old) :] for old, new in _FROM_LLAVA if name.startswith(old)), name)
        tensors[ours] = files.ref(name)
    # The post-layernorm is not on the feature path; a file without it gets the identity.
    width = config.vision.hidden_size
    tower_dtype = next((r.dtype for k, r in tensors.items() if k.startswith("vision_tower.")), torch.float32)
    for suffix, fill in (("weight", torch.ones), ("bias", torch.zeros)):
        key = f"vision_tower.vision_model.post_layernorm.{suffix}"
        if key not in tensors:
            tensors[key] = TensorRef((width,), tower_dtype, lambda device, fill=fill: fill(width, dtype=tower_dtype, device=device))
    checkpoint = resolve_tied_head(Checkpoint(config, tensors, str(folder), "llava-next", dropped))
    needed = max(config.image_token_id, config.video_token_id) + 1
    if needed > config.text.vocab_size:
        checkpoint = resize_vocab_refs(checkpoint, needed)
    return checkpoint


def load_llava_next(
    folder: str | Path,
    *,
    vision_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    progress: bool = True,
):
    """`OneVisionModel` from an original LLaVA-NeXT `llava_qwen` folder.

    Args:
        folder: config.json + safetensors as LLaVA-NeXT's trainer saves them.
        vision_dir: a SigLIP folder whose config.json gives the tower's shape, for configs that
            name a tower other than so400m-patch14-384 and carry no `vision_config`.
        device, dtype: where and in what dtype the weights land (None keeps the stored dtype).

    Raises:
        CheckpointError: config we cannot map, or keys / shapes that do not fit it.
    """
    return materialize(read_llava_next(folder, vision_dir), device=device, dtype=dtype, progress=progress)


def llava_next_config(config: ModelConfig, dtype: torch.dtype | None = None) -> dict:
    """The `llava_qwen` config.json we write for `config` (the tower gets its deleted layer back)."""
    from onevision.model.onevision import qwen2_config

    if not config.is_onevision:
        raise CheckpointError(
            f"LLaVA-NeXT's llava_qwen is SigLIP + mlp2x_gelu + image_newline + Qwen2; this model has "
            f"vision_tower={config.vision_tower!r}, projector_type={config.projector_type!r}, "
            f"use_image_newline={config.use_image_newline}, text_model={config.text_model!r} (write it as 'llava-hf' or 'llava-original')"
        )
    if config.vision_feature_layer != -1:
        raise CheckpointError(
            f"LLaVA-NeXT's SigLIP tower always uses its last kept layer; this model uses vision_feature_layer "
            f"{config.vision_feature_layer}. Convert a model whose tower ends at its feature layer (-1)."
        )
    if config.projector_act != "gelu":
        raise CheckpointError(f"LLaVA-NeXT's 'mlp2x_gelu' projector uses GELU; this model uses {config.projector_act!r}")
    full = dataclasses.replace(config.vision, num_hidden_layers=config.vision.num_hidden_layers + 1)
    so400m = config.vision == SIGLIP_SO400M
    text = qwen2_config(config.text, attn_implementation=None).to_dict()
    for key in ("model_type", "architectures", "transformers_version", "dtype"):
        text.pop(key, None)
    layout = llava_fields(config.visual)
    data = {
        **text,
        "architectures": [LLAVA_NEXT_ARCHITECTURE],
        "model_type": LLAVA_NEXT_MODEL_TYPE,
        "rope_theta": config.text.rope_theta,
        "tie_word_embeddings": config.text.tie_word_embeddings,
        "mm_vision_tower": SO400M_TOWER if so400m else "siglip-custom",
        "vision_config": {**dataclasses.asdict(full), "model_type": "siglip_vision_model"},
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": config.vision.hidden_size,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        **layout,
        "image_token_index": config.image_token_id,
        "video_token_index": config.video_token_id,
        VISUAL_KEY: to_dict(config.visual),
    }
    if dtype is not None:
        data["torch_dtype"] = str(dtype).removeprefix("torch.")
    return data


def ours_key_to_llava_next(key: str) -> str:
    """The LLaVA-NeXT key for our `key`."""
    for ours, theirs in _TO_LLAVA:
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    raise KeyError(f"{key!r} is not a key of OneVisionModel")


def write_llava_next(
    checkpoint: Checkpoint,
    folder: str | Path,
    *,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = "5GB",
    progress: bool = True,
) -> list[Path]:
    """Write `checkpoint` in the `llava_qwen` layout; returns the weight files written."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = llava_next_config(checkpoint.config, dtype or checkpoint.stored_dtype)
    (folder / CONFIG_FILE).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    refs = {ours_key_to_llava_next(k): ref for k, ref in checkpoint.tensors.items()}
    return write_tensors(refs, folder, dtype=dtype, max_shard_size=max_shard_size, progress=progress)


def save_llava_next(
    model,
    folder: str | Path,
    *,
    dtype: torch.dtype | None = None,
    max_shard_size: int | str = "5GB",
    progress: bool = True,
) -> list[Path]:
    """Save `OneVisionModel` in the original LLaVA-NeXT `llava_qwen` layout.

    Raises:
        CheckpointError: a setting LLaVA-NeXT cannot express, named: the model's feature layer is
            not its tower's last, or a visual setting (`llava_next_fields.llava_fields`).
    """
    checkpoint = Checkpoint(model.config, model_refs(model), "model", "llava-next")
    return write_llava_next(checkpoint, folder, dtype=dtype, max_shard_size=max_shard_size, progress=progress)
