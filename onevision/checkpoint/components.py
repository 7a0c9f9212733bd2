"""Start a model from separate checkpoints: a Qwen2 LLM folder and a SigLIP folder (stage 1).

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

LLM_MODEL_TYPES = ("qwen2",)
VISION_MODEL_TYPES = ("siglip_vision_model", "siglip")
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


def _media_token_ids(tokenizer, image_token_id: int | None, video_token_id: int | None) -> tuple[int, int]:
    """Placeholder ids: the tokenizer's (its `<image>`/`<video>` added when missing), else given, else defaults."""
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


def read_components(
    llm_dir: str | Path,
    vision_dir: str | Path,
    *,
    vision_feature_layer: int = -1,
    tokenizer=None,
    image_token_id: int | None = None,
    video_token_id: int | None = None,
    visual: VisualSettings | None = None,
) -> Checkpoint:
    """The LLM and SigLIP folders as one lazy `Checkpoint`, projector and newline freshly initialised.

    See `from_components` for the arguments.
    """
    from transformers import Qwen2Config

    llm_dir, vision_dir = Path(llm_dir), Path(vision_dir)
    llm_data = _model_type(llm_dir, LLM_MODEL_TYPES, "Qwen2 LLM")
    where = str(llm_dir / "config.json")
    warn_unknown(llm_data, known_fields("qwen2"), where)
    try:
        text = text_config_from_qwen2(Qwen2Config.from_dict(llm_data))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: {error}") from error
    full = read_vision_config(_model_type(vision_dir, VISION_MODEL_TYPES, "SigLIP"), str(vision_dir / "config.json"))
    vision = dataclasses.replace(full, num_hidden_layers=_kept_layers(full.num_hidden_layers, vision_feature_layer, vision_dir))
    image_id, video_id = _media_token_ids(tokenizer, image_token_id, video_token_id)
    visual = visual or VisualSettings(image_size=vision.image_size, patch_size=vision.patch_size)
    config = ModelConfig(vision=vision, text=text, vision_feature_layer=-1, image_token_id=image_id, video_token_id=video_id, visual=visual)

    tensors: dict[str, TensorRef] = {}
    dropped = []
    llm = TensorFolder(llm_dir)
    for name in llm.names():
        key = "language_model." + name if name.startswith(("model.", "lm_head.")) else name
        tensors[key] = llm.ref(name)
    tower = TensorFolder(vision_dir)
    for name in tower.names():
        inner = name.removeprefix("vision_model.")
        layer = _LAYER.match(inner)
        if name.startswith(("text_model.", "logit_")) or inner.startswith("head.") or (layer and int(layer.group(1)) >= vision.num_hidden_layers):
            dropped.append(name)
            continue
        tensors["vision_tower.vision_model." + inner] = tower.ref(name)

    from onevision.model.projector import Projector

    # Fresh weights take the decoder's stored dtype, so the model is of one dtype.
    fresh_dtype = tensors[EMBED_KEY].dtype if EMBED_KEY in tensors else torch.float32
    projector = Projector(vision.hidden_size, text.hidden_size, config.projector_act)
    for name, value in projector.state_dict().items():
        tensors["projector." + name] = TensorRef.of(value.to(fresh_dtype))
    width = text.hidden_size
    tensors["image_newline"] = TensorRef.of((torch.randn(width) / math.sqrt(width)).to(fresh_dtype))

    checkpoint = resolve_tied_head(Checkpoint(config, tensors, f"{llm_dir} + {vision_dir}", "components", dropped))
    rows = max(text.vocab_size, len(tokenizer) if tokenizer is not None else 0, image_id + 1, video_id + 1)
    if rows > text.vocab_size:
        checkpoint = resize_vocab_refs(checkpoint, rows)
    return checkpoint


def from_components(
    llm_dir: str | Path,
    vision_dir: str | Path,
    *,
    vision_feature_layer: int = -1,
    tokenizer=None,
    image_token_id: int | None = None,
    video_token_id: int | None = None,
    visual: VisualSettings | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    progress: bool = True,
):
    """`OneVisionModel` from a Qwen2 folder and a SigLIP folder, with a fresh projector and newline.

    Args:
        llm_dir: `Qwen2ForCausalLM.save_pretrained` folder.
        vision_dir: `SiglipVisionModel` or `SiglipModel` `save_pretrained` folder.
        vision_feature_layer: SigLIP hidden state used as features, counted over the source's
            layers (-1 last, -2 second-to-last as LLaVA-OneVision); the layers after it are
            dropped, so the model's own `vision_feature_layer` is -1.
        tokenizer: its `<image>` / `<video>` ids become the placeholder ids (added to it, in
            place, when missing); embeddings grow to `len(tokenizer)` when it is longer.
        image_token_id, video_token_id: placeholder ids without a tokenizer (default 151646 /
            151647, Qwen2's); with one they must agree with it.
        visual: visual token settings (default: `VisualSettings` for the tower's tile size).
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
    )
    return materialize(checkpoint, device=device, dtype=dtype, progress=progress)
