"""Start a model from separate checkpoints: an LLM folder and a vision folder (stage 1).

LLaVA v1 / 1.5 start the same way from a Llama (Vicuna) folder and a CLIP folder
(`family='llava15'` or `'llava-v1'`: the projector type, the class token dropped, no newline, the
image placeholder `<image>` alone and no video; haotian-liu/LLaVA `scripts/v1_5/pretrain.sh`).

Stage 1 of LLaVA-OneVision (arXiv 2408.03326, Sec. 4) trains only the projector on top of a
pretrained SigLIP and a pretrained Qwen2. `from_components` builds that starting point:

- the decoder from a `Qwen2ForCausalLM.save_pretrained` folder (config.json model_type "qwen2",
  keys `model.*`, `lm_head.weight`, the head absent when tied);
- the tower from a `SiglipVisionModel` folder (model_type "siglip_vision_model", keys without
  prefix or under `vision_model.`) or a full `SiglipModel` folder (model_type "siglip": its
  `vision_model.*` part; text tower, logit scale and pooling heads are left out). Layers past
  the feature layer are dropped: `vision_feature_layer=-2` over SigLIP's 27 layers keeps 26 and
  uses the last, as the released models do;
- a fresh projector (nn.Linear's initialisation) and `image_newline` ~ N(0, 1/D), as
  `OneVisionModel`'s constructor makes them;
- placeholder ids from the tokenizer, whose `<image>` / `<video>` are added when missing; when
  ids reach past the embedding rows, the embedding and head grow and the new rows are the mean
  of the old ones.
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import torch

from onevision.budget import VisualSettings
from onevision.checkpoint.files import (
    EMBED_KEY,
    HEAD_KEY,
    Checkpoint,
    CheckpointError,
    TensorFolder,
    TensorRef,
    materialize,
    read_json,
    resolve_tied_head,
)
from onevision.model.config import ModelConfig, TextConfig, VisionConfig
from onevision.model.hf_fields import known_fields, text_from_hf, vision_from_hf, warn_unknown

LLM_MODEL_TYPES = ("qwen2", "llama")
VISION_MODEL_TYPES = ("siglip_vision_model", "siglip", "clip_vision_model", "clip")
CLIP_MODEL_TYPES = ("clip_vision_model", "clip")
_CLIP_DROPPED = ("text_model.", "visual_projection.", "text_projection.", "logit_scale")
FAMILIES = {"onevision": "0.5b", "llava15": "llava15-7b", "llava-v1": "llava-v1-7b"}
"""Component families and the preset whose projector, strategy, newline and visual settings they take."""
_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.")


def read_vision_config(data: dict, where: str) -> VisionConfig:
    """Our `VisionConfig` from a SigLIP config dict (`siglip_vision_model`, or `siglip` with `vision_config`).

    Every `SiglipVisionConfig` field is honoured, refused or inert as `onevision.model.hf_fields` lists it.
    """
    from transformers import SiglipVisionConfig

    if data.get("model_type") == "siglip":
        data = data.get("vision_config") or {}
    elif data.get("model_type") not in (None, "siglip_vision_model"):
        raise CheckpointError(f"{where}: model_type {data.get('model_type')!r} is not a SigLIP ({VISION_MODEL_TYPES})")
    warn_unknown(data, known_fields("siglip"), where)
    try:
        return vision_from_hf(SiglipVisionConfig.from_dict(data), where=f"{where}: ")
    except (TypeError, ValueError) as error:
        raise CheckpointError(error if str(error).startswith(where) else f"{where}: {error}") from error


def read_clip_folder(folder: Path) -> tuple[VisionConfig, dict[str, TensorRef], list[str]]:
    """A `CLIPVisionModel` or `CLIPModel` folder: its tower shape, the tower's tensors (keys without
    `vision_model.`) and the names left out (text tower, projections, logit scale, position ids)."""
    from transformers import CLIPVisionConfig

    from onevision.model.llava_fields import clip_vision_from_hf
    from onevision.model.llava_fields import known_fields as llava_known_fields

    path = folder / "config.json"
    data = read_json(path)
    if data.get("model_type") not in CLIP_MODEL_TYPES:
        raise CheckpointError(f"{path}: model_type {data.get('model_type')!r} is not a CLIP ({CLIP_MODEL_TYPES})")
    vision_data = (data.get("vision_config") or {}) if data["model_type"] == "clip" else data
    warn_unknown(vision_data, llava_known_fields("clip"), str(path))
    try:
        vision = clip_vision_from_hf(CLIPVisionConfig.from_dict(vision_data), where=f"{path}: ")
    except (TypeError, ValueError) as error:
        raise CheckpointError(error if str(error).startswith(str(path)) else f"{path}: {error}") from error
    files = TensorFolder(folder)
    tensors, dropped = {}, []
    for name in files.names():
        if name.startswith(_CLIP_DROPPED) or name.endswith("position_ids"):
            dropped.append(name)
            continue
        tensors[name.removeprefix("vision_model.")] = files.ref(name)
    return vision, tensors, dropped


def text_config_from_qwen2(qwen2) -> TextConfig:
    """Our `TextConfig` from a transformers `Qwen2Config` (read as `ModelConfig.from_hf` reads text_config)."""
    return text_from_hf(qwen2, where="")


def _mean_rows(ref: TensorRef, rows: int) -> TensorRef:
    def load(device: str) -> torch.Tensor:
        old = ref.load(device)
        mean = old.float().mean(dim=0, keepdim=True).to(old.dtype)
        return torch.cat([old, mean.expand(rows - old.shape[0], -1)])

    return TensorRef((rows, *ref.shape[1:]), ref.dtype, load)


def resize_vocab_refs(checkpoint: Checkpoint, rows: int) -> Checkpoint:
    """Grow the embedding (and untied head) to `rows`; new rows are the mean of the old ones."""
    old = checkpoint.config.text.vocab_size
    if rows < old:
        raise CheckpointError(f"{checkpoint.source}: cannot shrink the vocabulary from {old} to {rows} rows")
    for key in (EMBED_KEY, HEAD_KEY):
        if key in checkpoint.tensors:
            checkpoint.tensors[key] = _mean_rows(checkpoint.tensors[key], rows)
    text = dataclasses.replace(checkpoint.config.text, vocab_size=rows)
    checkpoint.config = dataclasses.replace(checkpoint.config, text=text)
    return checkpoint


def _model_type(folder: Path, allowed: tuple[str, ...], what: str) -> dict:
    data = read_json(folder / "config.json")
    if data.get("model_type") not in allowed:
        raise CheckpointError(f"{folder / 'config.json'}: model_type {data.get('model_type')!r} is not a {what} ({allowed})")
    return data


def _kept_layers(num_layers: int, feature_layer: int, folder: Path) -> int:
    depth = feature_layer if feature_layer >= 0 else num_layers + 1 + feature_layer
    if not 1 <= depth <= num_layers:
        raise CheckpointError(
            f"{folder}: vision_feature_layer {feature_layer} leaves {depth} of the tower's {num_layers} layers; "
            f"it must keep 1..{num_layers} (1..{num_layers} or -1..-{num_layers})"
        )
    return depth


def add_media_tokens(tokenizer) -> tuple[int, int]:
    """Ids of `<image>` and `<video>` in `tokenizer`, adding them (in place, as special tokens) when missing.

    As transformers' llava_onevision conversion does: the released Qwen2 tokenizer then gives
    151646 and 151647.
    """
    from tokenizers import AddedToken

    from onevision.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN

    vocab = tokenizer.get_vocab()
    missing = [t for t in (IMAGE_TOKEN, VIDEO_TOKEN) if t not in vocab]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)


def _media_token_ids(
    tokenizer, image_token_id: int | None, video_token_id: int | None, image_only_rows: int | None = None
) -> tuple[int, int | None]:
    """Placeholder ids: the tokenizer's (its `<image>`/`<video>` added when missing), else given, else defaults.

    `image_only_rows` (LLaVA v1 / 1.5: the LLM's vocabulary size): only `<image>` is added to the
    tokenizer, no video id; without a tokenizer the image id defaults to that row count (one row
    is added to the embedding, as llava-hf adds <image> at 32000).
    """
    if image_only_rows is not None:
        if tokenizer is None:
            return (image_only_rows if image_token_id is None else image_token_id), None
        from tokenizers import AddedToken

        from onevision.tokenizer import IMAGE_TOKEN

        if IMAGE_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
        found = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if image_token_id is not None and image_token_id != found:
            raise CheckpointError(f"{IMAGE_TOKEN} is id {found} in the tokenizer but {image_token_id} was asked for")
        return found, None
    if tokenizer is None:
        defaults = ModelConfig()
        return (
            defaults.image_token_id if image_token_id is None else image_token_id,
            defaults.video_token_id if video_token_id is None else video_token_id,
        )
    from onevision.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN

    ids = add_media_tokens(tokenizer)
    for given, found, name in ((image_token_id, ids[0], IMAGE_TOKEN), (video_token_id, ids[1], VIDEO_TOKEN)):
        if given is not None and given != found:
            raise CheckpointError(f"{name} is id {found} in the tokenizer but {given} was asked for")
    return ids


def _read_llm(llm_dir: Path) -> tuple[TextConfig, str]:
    """The decoder shape and family ('qwen2' or 'llama') of an LLM folder."""
    from transformers import LlamaConfig, Qwen2Config

    from onevision.model.llava_fields import known_fields as llava_known_fields
    from onevision.model.llava_fields import llama_text_from_hf

    data = _model_type(llm_dir, LLM_MODEL_TYPES, "Qwen2 or Llama LLM")
    where = str(llm_dir / "config.json")
    kind = data["model_type"]
    warn_unknown(data, known_fields("qwen2") if kind == "qwen2" else llava_known_fields("llama"), where)
    try:
        if kind == "qwen2":
            return text_config_from_qwen2(Qwen2Config.from_dict(data)), kind
        return llama_text_from_hf(LlamaConfig.from_dict(data), where=""), kind
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: {error}") from error


def _kept_and_layers(num_layers: int, feature_layer: int | tuple[int, ...] | list[int], folder: Path) -> tuple[int, int | tuple[int, ...]]:
    """Layers to keep and the model's feature layer(s) over them: one layer becomes the last kept
    (-1); several keep up to the deepest and are counted from the bottom."""
    if isinstance(feature_layer, int):
        return _kept_layers(num_layers, feature_layer, folder), -1
    depths = tuple(_kept_layers(num_layers, layer, folder) for layer in feature_layer)
    if not depths:
        raise CheckpointError(f"{folder}: vision_feature_layer is an empty list")
    return max(depths), depths


def read_components(
    llm_dir: str | Path,
    vision_dir: str | Path,
    *,
    vision_feature_layer: int | tuple[int, ...] | list[int] = -1,
    tokenizer=None,
    image_token_id: int | None = None,
    video_token_id: int | None = None,
    visual: VisualSettings | None = None,
    family: str = "onevision",
) -> Checkpoint:
    """The LLM and vision folders as one lazy `Checkpoint`, projector (and newline) freshly initialised.

    See `from_components` for the arguments.
    """
    from onevision.model.config import preset

    if family not in FAMILIES:
        raise CheckpointError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    like = preset(FAMILIES[family])
    llm_dir, vision_dir = Path(llm_dir), Path(vision_dir)
    text, text_model = _read_llm(llm_dir)
    vision_data = _model_type(vision_dir, VISION_MODEL_TYPES, "SigLIP or CLIP")
    tower_kind = "clip" if vision_data["model_type"] in CLIP_MODEL_TYPES else "siglip"
    if tower_kind == "clip":
        full, tower_tensors, dropped = read_clip_folder(vision_dir)
    else:
        full = read_vision_config(vision_data, str(vision_dir / "config.json"))
        files = TensorFolder(vision_dir)
        tower_tensors, dropped = {}, []
        for name in files.names():
            if name.startswith(("text_model.", "logit_")) or name.removeprefix("vision_model.").startswith("head."):
                dropped.append(name)
                continue
            tower_tensors[name.removeprefix("vision_model.")] = files.ref(name)
    kept, layers = _kept_and_layers(full.num_hidden_layers, vision_feature_layer, vision_dir)
    vision = dataclasses.replace(full, num_hidden_layers=kept)
    takes_video = family == "onevision"
    image_id, video_id = _media_token_ids(tokenizer, image_token_id, video_token_id, text.vocab_size if not takes_video else None)
    base_visual = visual or like.visual
    strategy = like.vision_feature_select_strategy if tower_kind == "clip" else "full"
    config = ModelConfig(
        vision=vision,
        text=text,
        vision_feature_layer=layers,
        image_token_id=image_id,
        video_token_id=video_id if takes_video else None,
        visual=dataclasses.replace(base_visual, image_size=vision.image_size, patch_size=vision.patch_size),
        vision_tower=tower_kind,
        text_model=text_model,
        vision_feature_select_strategy=strategy,
        projector_type=like.projector_type,
        projector_act=like.projector_act,
        use_image_newline=like.use_image_newline,
    )

    tensors: dict[str, TensorRef] = {}
    llm = TensorFolder(llm_dir)
    for name in llm.names():
        if name.endswith(".inv_freq"):
            dropped.append(name)
            continue
        key = "language_model." + name if name.startswith(("model.", "lm_head.")) else name
        tensors[key] = llm.ref(name)
    for inner, ref in tower_tensors.items():
        layer = _LAYER.match(inner)
        if layer and int(layer.group(1)) >= vision.num_hidden_layers:
            dropped.append(ref.name or inner)
            continue
        tensors["vision_tower.vision_model." + inner] = ref

    from onevision.model.config import projector_depth
    from onevision.model.projector import Projector

    # Fresh weights take the decoder's stored dtype, so the model is of one dtype.
    fresh_dtype = tensors[EMBED_KEY].dtype if EMBED_KEY in tensors else torch.float32
    width_in = vision.hidden_size * len(config.feature_layers)
    projector = Projector(width_in, text.hidden_size, config.projector_act, projector_depth(config.projector_type))
    for name, value in projector.state_dict().items():
        tensors["projector." + name] = TensorRef.of(value.to(fresh_dtype))
    width = text.hidden_size
    if config.use_image_newline:
        tensors["image_newline"] = TensorRef.of((torch.randn(width) / math.sqrt(width)).to(fresh_dtype))

    checkpoint = resolve_tied_head(Checkpoint(config, tensors, f"{llm_dir} + {vision_dir}", "components", dropped))
    ids = [image_id] + ([video_id] if config.video_token_id is not None else [])
    rows = max([text.vocab_size, len(tokenizer) if tokenizer is not None else 0] + [i + 1 for i in ids])
    if rows > text.vocab_size:
        checkpoint = resize_vocab_refs(checkpoint, rows)
    return checkpoint


def from_components(
    llm_dir: str | Path,
    vision_dir: str | Path,
    *,
    vision_feature_layer: int | tuple[int, ...] | list[int] = -1,
    tokenizer=None,
    image_token_id: int | None = None,
    video_token_id: int | None = None,
    visual: VisualSettings | None = None,
    family: str = "onevision",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    progress: bool = True,
):
    """`OneVisionModel` from an LLM folder and a vision folder, with a fresh projector (and newline).

    Args:
        llm_dir: `Qwen2ForCausalLM` or `LlamaForCausalLM` `save_pretrained` folder.
        vision_dir: `SiglipVisionModel` / `SiglipModel` or `CLIPVisionModel` / `CLIPModel` folder.
        vision_feature_layer: tower hidden state used as features, counted over the source's
            layers (-1 last, -2 second-to-last as LLaVA-OneVision and LLaVA); the layers after it
            are dropped, so the model's own `vision_feature_layer` is -1. A list keeps the layers
            up to the deepest and concatenates them (the model's layers counted from the bottom).
        tokenizer: its `<image>` / `<video>` ids become the placeholder ids (added to it, in
            place, when missing); embeddings grow to `len(tokenizer)` when it is longer.
        image_token_id, video_token_id: placeholder ids without a tokenizer (default 151646 /
            151647, Qwen2's); with one they must agree with it.
        visual: visual token settings (default: the family's, for the tower's tile size).
        family: 'onevision' (mlp2x_gelu, newline, `<image>` and `<video>`), 'llava15'
            (mlp2x_gelu, pad-to-square, no newline, `<image>` only: its id is the LLM's vocabulary
            size without a tokenizer) or 'llava-v1' (linear, shortest side + centre crop); a CLIP
            tower drops its class token ('default'), as LLaVA's 'patch'.
        device, dtype: where and in what dtype the weights land (None keeps the stored dtype).

    Raises:
        CheckpointError: a folder of the wrong kind, or weights that do not fit its config.
    """
    checkpoint = read_components(
        llm_dir,
        vision_dir,
        vision_feature_layer=vision_feature_layer,
        tokenizer=tokenizer,
        image_token_id=image_token_id,
        video_token_id=video_token_id,
        visual=visual,
        family=family,
    )
    return materialize(checkpoint, device=device, dtype=dtype, progress=progress)
