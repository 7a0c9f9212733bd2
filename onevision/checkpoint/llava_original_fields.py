"""LLaVA (haotian-liu/LLaVA) `llava_llama` config.json fields <-> our `ModelConfig`, read as the original reads them.

Followed: haotian-liu/LLaVA at commit c121f0432da27facab705978f83c4ada465e46fd (2024-05-12):
`llava/model/llava_arch.py` (`LlavaMetaModel.__init__`, `prepare_inputs_labels_for_multimodal`),
`llava/model/multimodal_encoder/{builder,clip_encoder}.py`, `llava/model/multimodal_projector/builder.py`,
`llava/mm_utils.py` (`process_images`, `expand2square`), `llava/model/language_model/llava_llama.py`.

`FIELDS` names every config field that code reads besides LlamaConfig's own (those go through
`onevision.model.llava_fields`), and what we do with it: mapped, no effect (say why), or
refused unless some value (anything else raises `CheckpointError` naming the field).

- The tower: `CLIPVisionModel.from_pretrained(mm_vision_tower)`, `hidden_states[mm_vision_select_layer]`,
  the class token dropped for 'patch' (the default), kept for 'cls_patch': our CLIP tower,
  `vision_feature_layer`, strategy 'default' / 'full'.
- The projector: `mm_projector_type` 'linear' (the default when absent: LLaVA v1) or
  'mlpNx_gelu' (nn.Sequential of Linear, GELU, Linear, ...: keys `model.mm_projector.{0,2,..}`).
- Images: `image_aspect_ratio` 'pad' -> `expand2square` with int(mean * 255), then the CLIP
  processor (LLaVA-1.5; our base_image 'pad'); absent or 'square' -> the CLIP processor alone,
  shortest side then centre crop (LLaVA v1; 'crop'). Each image is the tower's tokens, no newline
  (`mm_patch_merge_type` 'flat').
- The placeholder: the original splices at id -200 (IMAGE_TOKEN_INDEX), outside the vocabulary;
  ours is a real id, `image_token_index` when the config has it (we write it), else the next
  row after the vocabulary, which the reader adds (the mean of the other rows) so the id can be
  embedded. Logits then cover one more id than the original's.
"""

from __future__ import annotations

import re

from onevision.budget import VisualSettings
from onevision.checkpoint.files import CheckpointError

ORIGINAL_COMMIT = "c121f0432da27facab705978f83c4ada465e46fd"
_MLP = re.compile(r"^mlp(\d+)x_gelu$")

FIELDS: dict[str, str] = {
    "model_type": "refused unless 'llava_llama', or 'llava' (the released configs) with architectures ['LlavaLlamaForCausalLM']",
    "mm_vision_tower": "mapped: the CLIP folder the tower is read from (or vision_dir)",
    "vision_tower": "mapped: read when mm_vision_tower is absent, as build_vision_tower does",
    "mm_vision_select_layer": "mapped: vision_feature_layer (one int)",
    "mm_vision_select_feature": "mapped: 'patch' (default) -> strategy 'default', 'cls_patch' -> 'full'; refused otherwise",
    "mm_projector_type": "mapped: 'linear' (default) or 'mlpNx_gelu'; refused otherwise ('identity')",
    "mm_hidden_size": "refused unless it equals the CLIP width",
    "mm_patch_merge_type": "refused unless 'flat' or absent (spatial merges need AnyRes and a newline: LLaVA-NeXT)",
    "image_aspect_ratio": "mapped: 'pad' -> base_image 'pad'; 'square' or absent -> 'crop'; refused otherwise ('anyres')",
    "image_grid_pinpoints": "no effect: read only for image_aspect_ratio 'anyres' (refused)",
    "mm_use_im_start_end": "refused unless false (prompts would wrap images in <im_start>/<im_end>)",
    "mm_use_im_patch_token": "no effect on the model: adds <im_patch> to the tokenizer while training; prompts never hold it",
    "tune_mm_mlp_adapter": "no effect: raises in the original only with mm_use_im_start_end (refused)",
    "freeze_mm_mlp_adapter": "no effect: which parameters train",
    "unfreeze_mm_vision_tower": "no effect: when the tower's weights are loaded, not which",
    "use_mm_proj": "no effect: bookkeeping; the projector always exists",
    "mm_vision_tower_lr": "no effect: a learning rate",
    "mm_projector_lr": "no effect: a learning rate",
    "s2": "refused unless false (multi-scale S2 towers are not supported)",
    "s2_scales": "no effect: read only with s2 (refused)",
    "tokenizer_model_max_length": "no effect on logits: the original cuts longer embedded sequences, we never cut "
    "(our planner and max lengths refuse instead)",
    "tokenizer_padding_side": "no effect: each row gets positions 0..len and a mask either way",
    "max_sequence_length": "no effect: the builder's context length for callers",
    "image_token_index": "mapped: image_token_id (ours; the original splices at -200)",
    "video_token_index": "mapped: video_token_id (ours; LLaVA takes no video)",
    "onevision_visual": "mapped: our visual settings, checked against image_aspect_ratio",
}


def _refuse(where: str, field: str, value, why: str) -> CheckpointError:
    return CheckpointError(f"{where}: {field} {value!r}: {why}")


def check_refused_fields(data: dict, where: str) -> None:
    """Raise for the first field whose value the original applies in a way we do not reproduce."""
    merge = data.get("mm_patch_merge_type", "flat")
    if merge != "flat":
        raise _refuse(where, "mm_patch_merge_type", merge, "only 'flat' is supported (no AnyRes, no image newline)")
    for field in ("mm_use_im_start_end", "s2"):
        if data.get(field):
            raise _refuse(where, field, data[field], "not supported; it must be false")
    if data.get("mm_vision_select_feature", "patch") not in ("patch", "cls_patch"):
        raise _refuse(where, "mm_vision_select_feature", data["mm_vision_select_feature"], "must be 'patch' or 'cls_patch'")
    layer = data.get("mm_vision_select_layer", -2)
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise _refuse(where, "mm_vision_select_layer", layer, "must be one int (the original selects one hidden state)")
    projector = data.get("mm_projector_type", "linear")
    if projector != "linear" and not _MLP.match(str(projector)):
        raise _refuse(where, "mm_projector_type", projector, "only 'linear' and 'mlpNx_gelu' are supported")
    aspect = data.get("image_aspect_ratio")
    if aspect not in (None, "square", "pad"):
        raise _refuse(where, "image_aspect_ratio", aspect, "only 'pad', 'square' or absent (LLaVA v1 / 1.5) are supported")


def model_fields(data: dict) -> dict:
    """`ModelConfig` keyword arguments the `mm_*` fields give (tower and decoder shapes aside)."""
    return {
        "vision_tower": "clip",
        "text_model": "llama",
        "vision_feature_layer": data.get("mm_vision_select_layer", -2),
        "vision_feature_select_strategy": "default" if data.get("mm_vision_select_feature", "patch") == "patch" else "full",
        "projector_type": data.get("mm_projector_type", "linear"),
        "use_image_newline": False,
    }


def visual_from_original(data: dict, image_size: int, patch_size: int) -> VisualSettings:
    """Visual settings as the original's `process_images` applies `image_aspect_ratio`."""
    return VisualSettings(
        image_size=image_size,
        patch_size=patch_size,
        single_image="base",
        base_image="pad" if data.get("image_aspect_ratio") == "pad" else "crop",
        video_newline="none",
        image_newline=False,
    )


def original_fields(config) -> dict:
    """The `mm_*` fields we write for `config`.

    Raises:
        CheckpointError: a part or setting the original cannot express, named.
    """
    problems = []
    if config.vision_tower != "clip":
        problems.append(f"vision_tower={config.vision_tower!r} (llava_llama builds CLIP towers only)")
    if config.text_model != "llama":
        problems.append(f"text_model={config.text_model!r} (llava_llama is a Llama decoder; Qwen2 is LLaVA-NeXT's llava_qwen)")
    if config.use_image_newline:
        problems.append("use_image_newline=True (mm_patch_merge_type 'flat' has no newline)")
    if not isinstance(config.vision_feature_layer, int):
        problems.append(f"vision_feature_layer={list(config.vision_feature_layer)} (mm_vision_select_layer is one int)")
    if config.projector_act != "gelu":
        problems.append(f"projector_act={config.projector_act!r} (mlpNx_gelu uses GELU)")
    visual = config.visual
    if visual.single_image != "base" or visual.base_image not in ("pad", "crop") or visual.max_visual_tokens is not None:
        problems.append(
            f"visual single_image={visual.single_image!r}, base_image={visual.base_image!r}, max_visual_tokens="
            f"{visual.max_visual_tokens!r} (the original takes one base image, padded or cropped, no budget)"
        )
    if problems:
        raise CheckpointError("the original llava_llama layout cannot express " + "; ".join(problems))
    return {
        "mm_projector_type": config.projector_type,
        "mm_hidden_size": config.vision.hidden_size,
        "mm_vision_select_layer": config.vision_feature_layer,
        "mm_vision_select_feature": "patch" if config.vision_feature_select_strategy == "default" else "cls_patch",
        "mm_patch_merge_type": "flat",
        "image_aspect_ratio": "pad" if visual.base_image == "pad" else "square",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "use_mm_proj": True,
    }
