"""LLaVA-NeXT `llava_qwen` config.json fields <-> our `VisualSettings`, read as the original reads them.

Followed: LLaVA-VL/LLaVA-NeXT at commit df179663ae8b83207df100a1f7af24caec633ff9 (2026-04-15):
`llava/model/llava_arch.py` (`prepare_inputs_labels_for_multimodal`, `get_2dPool`,
`add_token_per_grid`, `add_token_per_frame`, `unpad_image`), `llava/mm_utils.py`
(`process_images`, `process_anyres_image`, `get_anyres_image_grid_shape`,
`select_best_resolution`, `expand2square`), `llava/model/language_model/llava_qwen.py`,
`llava/model/builder.py` and the tower / projector / resampler builders.

`FIELDS` names every config field that code reads and what we do with it: mapped onto our
settings, without effect on what the model computes at inference (say why), or accepted for
some values only (anything else raises `CheckpointError` naming the field). How the original
applies the visual fields, and our settings for it:

- `mm_patch_merge_type`: only the 'spatial...unpad' family (unpadded AnyRes map, a newline per
  row; no 'maxpool2x2', no 'nobase') has the `image_newline` our layout uses.
- `image_aspect_ratio`: 'anyres_max_N' -> AnyRes-Max-N; 'anyres' -> AnyRes never shrunk
  (anyres_max = the largest grid's crop count, so r <= 1 always); 'pad' -> one base image,
  padded with the mean colour (single_image='base'); 'square' or absent -> one base image
  resized straight (base_image='stretch'). Several images are padded to base size, as the
  original trains them (train.py re-processes multi-image samples with 'pad').
- `image_grid_pinpoints`: pairs are (width, height) (`select_best_resolution` unpacks
  `for width, height in possible_resolutions`); the range form "(1x1),...,(6x6)" gives
  (i*S, j*S) as (width, height) too. Stored here as (height, width).
- Unpadding truncates (`int(original_height * scale_factor)` in `unpad_image`):
  unpad_rounding='truncate' for every checkpoint read in this layout.
- `mm_spatial_pool_mode` bilinear / average / max -> video_pool_mode. The stride: the path the
  original runs calls `self.get_2dPool(image_feat)` with its default stride=2 for every mode;
  `mm_spatial_pool_stride` is read only by `encode_multimodals`, which nothing calls. So the
  stride is 2, and a config asking for another stride is refused rather than silently pooled
  with 2.
- `mm_newline_position` one_token / frame / grid / no_token -> video_newline video / frame / row
  / none (default 'one_token', as `getattr(self.config, "mm_newline_position", "one_token")`).
- Images reach the original as a list of per-image tensors (its inference examples); a stacked
  4-D tensor (lmms-eval with 'pad' / 'square') skips the merge branch and gets no newline. We
  follow the list form: one newline after every base image.

Fields that act around the weights, not on them (`llava_next.OriginalRuntime`, honoured by
`onevision.infer.OneVision` for original folders):
- The builder adds `<im_patch>` to the tokenizer when `mm_use_im_patch_token` (default true) and
  then resizes embedding and head to `len(tokenizer)` rows (151,646 for the Qwen2 tokenizer
  against 152,064 stored in the 7B, 151,936 in the 0.5B): its softmax, argmax and sampling see
  only those ids. We keep every stored row (the checkpoint is unchanged) and give logits to
  the first `len(tokenizer)` ids only, in scoring and in generation, which is the same.
- `tokenizer_model_max_length`: the original cuts an embedded sequence with media to it, visual
  tokens included (mid-image if need be). We refuse such a prompt instead, naming the field and
  both lengths; a text-only prompt is not cut there (that function returns early) nor refused.
- `add_time_instruction`: switches on LLaVA-Video's time instruction in video prompts, in the
  original's words (`onevision.data.template.time_instruction`).
"""

from __future__ import annotations

import ast
import re

from onevision.budget import VisualSettings
from onevision.checkpoint.files import CheckpointError

ORIGINAL_COMMIT = "df179663ae8b83207df100a1f7af24caec633ff9"
NEWLINE_FROM_LLAVA = {"one_token": "video", "frame": "frame", "grid": "row", "no_token": "none"}
NEWLINE_TO_LLAVA = {v: k for k, v in NEWLINE_FROM_LLAVA.items()}
POOL_MODES = ("bilinear", "average", "max")
ORIGINAL_POOL_STRIDE = 2

# Every config field the original code reads (see the module docstring for the files), and how
# we treat it: "mapped" (onto our model or visual settings), "no effect" (read, but changes
# nothing the model computes at inference), or "refused unless ..." (other values raise).
FIELDS: dict[str, str] = {
    "model_type": "refused unless 'llava_qwen', or 'llava' (the released configs) with architectures ['LlavaQwenForCausalLM']",
    "mm_vision_tower": "mapped: SigLIP shape (so400m by name, else vision_config / vision_dir); refused unless it names a SigLIP",
    "vision_tower": "mapped: read when mm_vision_tower is absent, as build_vision_tower does",
    "s2": "no effect: only CLIP towers read it",
    "delay_load": "no effect: when the tower's weights are loaded, not which",
    "unfreeze_mm_vision_tower": "no effect: when the tower's weights are loaded, not which",
    "mm_tunable_parts": "no effect: when the tower's weights are loaded, not which",
    "mm_vision_select_layer": "no effect: SigLipVisionTower ignores it (deletes the last layer, takes hidden_states[-1])",
    "mm_vision_select_feature": "no effect: SigLipVisionTower ignores it (all patch tokens; SigLIP has no CLS)",
    "mm_projector_type": "refused unless 'mlp2x_gelu'",
    "mm_hidden_size": "refused unless it equals the SigLIP width",
    "hidden_size": "mapped: the Qwen2 width (with every other Qwen2Config field)",
    "mm_resampler_type": "refused unless null (the resampler is built but its call is commented out)",
    "mm_patch_merge_type": "refused unless spatial*unpad without maxpool2x2 / nobase",
    "image_aspect_ratio": "mapped: anyres_max_N, anyres, pad, square / absent; refused otherwise (highres, crop_split)",
    "image_grid_pinpoints": "mapped: (width, height) pairs, list or string, or the '(AxB),...,(CxD)' range",
    "image_crop_resolution": "no effect: read only for image_aspect_ratio 'crop_split' (refused)",
    "image_split_resolution": "no effect: read only for image_aspect_ratio 'crop_split' (refused)",
    "mm_spatial_pool_mode": "mapped: video_pool_mode bilinear / average / max; refused otherwise",
    "mm_spatial_pool_stride": "refused unless 2 or absent (the original pools with a fixed 2)",
    "mm_newline_position": "mapped: video_newline; refused unless grid / frame / one_token / no_token",
    "add_faster_video": "refused unless false",
    "faster_token_stride": "no effect: read only with add_faster_video (refused)",
    "mm_use_im_start_end": "refused unless false (prompts would wrap images in <im_start>/<im_end>)",
    "tune_mm_mlp_adapter": "no effect: raises in the original only with mm_use_im_start_end (refused)",
    "mm_use_im_patch_token": "mapped: true (the default) adds <im_patch> to the tokenizer before the builder's "
    "resize_token_embeddings(len(tokenizer)); logits cover those len(tokenizer) ids only (OneVision)",
    "tokenizer_model_max_length": "mapped: prompts with media longer than it are refused (the original cuts them, "
    "visual tokens included; OneVision's max_length)",
    "tokenizer_padding_side": "no effect: each row gets positions 0..len and a mask either way",
    "use_pos_skipping": "refused unless false (a training-time position trick)",
    "pos_skipping_range": "no effect: read only with use_pos_skipping (refused)",
    "rope_scaling": "mapped: dropped, as LlavaQwenForCausalLM sets config.rope_scaling = None",
    "max_sequence_length": "no effect: the builder's context length for callers",
    "max_position_embeddings": "mapped: Qwen2 field (also the builder's context length)",
    "frames_upbound": "mapped: frames sampled per video (a training data argument the config keeps)",
    "add_time_instruction": "mapped: true switches on LLaVA-Video's time instruction in video prompts "
    "(OneVision's time_instruction)",
    "force_sample": "no effect on the model: frames are sampled uniformly up to frames_upbound",
}

_MERGE_OK = re.compile(r"^spatial.*unpad")
_ANYRES_MAX = re.compile(r"^anyres_max_(\d+)$")


def _refuse(where: str, field: str, value, why: str) -> CheckpointError:
    return CheckpointError(f"{where}: {field} {value!r}: {why}")


def check_refused_fields(data: dict, where: str) -> None:
    """Raise for every field whose value the original applies in a way we do not reproduce."""
    merge = data.get("mm_patch_merge_type", "flat")
    if not isinstance(merge, str) or not _MERGE_OK.match(merge) or "maxpool2x2" in merge or "nobase" in merge:
        raise _refuse(where, "mm_patch_merge_type", merge, "only 'spatial_unpad' layouts (unpadded AnyRes, a newline per row) are supported")
    for field in ("add_faster_video", "mm_use_im_start_end", "use_pos_skipping"):
        if data.get(field):
            raise _refuse(where, field, data[field], "not supported; it must be false")
    if data.get("mm_resampler_type") is not None:
        raise _refuse(where, "mm_resampler_type", data["mm_resampler_type"], "only no resampler (null) is supported")
    stride = data.get("mm_spatial_pool_stride")
    if stride is not None and stride != ORIGINAL_POOL_STRIDE:
        raise _refuse(
            where, "mm_spatial_pool_stride", stride,
            f"LLaVA-NeXT ({ORIGINAL_COMMIT[:7]}) pools video with a fixed stride of {ORIGINAL_POOL_STRIDE} "
            "(get_2dPool's default) whatever this says; refusing rather than guessing which was meant",
        )
    tower = data.get("mm_vision_tower", data.get("vision_tower"))
    if tower is not None and "siglip" not in str(tower):
        raise _refuse(where, "mm_vision_tower", tower, "only SigLIP towers are supported")


def expand_grid_pinpoints(value, tile_size: int) -> list[tuple[int, int]]:
    """LLaVA-NeXT `image_grid_pinpoints` as our (height, width) pairs, in the original's order.

    Accepts a list of pairs, its string form "[(384, 768), ...]", or the range form
    "(1x1),...,(6x6)": every (i, j) from the first pair to the last, times `tile_size`. The
    original reads each pair as (width, height) (`mm_utils.select_best_resolution`); we swap
    them. Order is kept, so ties break on the same entry.
    """
    if isinstance(value, str) and "x" in value:
        matches = re.findall(r"\((\d+)x(\d+)\)", value)
        if not matches:
            raise CheckpointError(f"image_grid_pinpoints {value!r} has no '(AxB)' grid")
        (r0, c0), (r1, c1) = (tuple(map(int, m)) for m in (matches[0], matches[-1]))
        pairs = [(i * tile_size, j * tile_size) for i in range(r0, r1 + 1) for j in range(c0, c1 + 1)]
    else:
        try:
            pairs = ast.literal_eval(value) if isinstance(value, str) else value
            pairs = [(int(a), int(b)) for a, b in pairs]
        except (ValueError, TypeError, SyntaxError):
            raise CheckpointError(f"image_grid_pinpoints {value!r} is not a list of (width, height) pairs") from None
    return [(int(height), int(width)) for width, height in pairs]


def visual_from_llava(data: dict, where: str, image_size: int, patch_size: int) -> VisualSettings:
    """Our visual settings from the `mm_*` / layout fields, as the original applies them.

    Raises:
        CheckpointError: a value the original applies in a way we do not reproduce; the message
            names the field.
    """
    check_refused_fields(data, where)
    aspect = data.get("image_aspect_ratio")
    pins = data.get("image_grid_pinpoints")
    pinpoints = tuple(expand_grid_pinpoints(pins, image_size)) if pins else None
    single, base_image, anyres_max = "anyres", "pad", VisualSettings.anyres_max
    matched = _ANYRES_MAX.match(aspect) if isinstance(aspect, str) else None
    if matched or aspect == "anyres":
        if not pinpoints:
            raise _refuse(where, "image_aspect_ratio", aspect, "needs image_grid_pinpoints, which the config lacks")
        bad = [p for p in pinpoints if p[0] % image_size or p[1] % image_size or min(p) <= 0]
        if bad:
            raise _refuse(where, "image_grid_pinpoints", pins, f"{bad[0]} (h, w) is not a grid of {image_size} px crops")
        # 'anyres' never shrinks the map: an N of the largest grid's crop count keeps r <= 1.
        anyres_max = int(matched.group(1)) if matched else max(h * w for h, w in pinpoints) // image_size**2
        if anyres_max < 1:
            raise _refuse(where, "image_aspect_ratio", aspect, "N must be at least 1")
    elif aspect == "pad":
        single = "base"
    elif aspect in (None, "", "square"):
        single, base_image = "base", "stretch"
    else:
        raise _refuse(where, "image_aspect_ratio", aspect, "supported: anyres_max_N, anyres, pad, square")
    mode = data.get("mm_spatial_pool_mode") or "bilinear"
    if mode not in POOL_MODES:
        raise _refuse(where, "mm_spatial_pool_mode", mode, f"one of {POOL_MODES} expected")
    newline = data.get("mm_newline_position") or "one_token"
    if newline not in NEWLINE_FROM_LLAVA:
        raise _refuse(where, "mm_newline_position", newline, f"one of {sorted(NEWLINE_FROM_LLAVA)} expected")
    return VisualSettings(
        image_size=image_size,
        patch_size=patch_size,
        anyres_max=anyres_max,
        grid_pinpoints=pinpoints,
        video_pool_stride=ORIGINAL_POOL_STRIDE,
        video_pool_mode=mode,
        video_newline=NEWLINE_FROM_LLAVA[newline],
        frames_upbound=int(data.get("frames_upbound") or VisualSettings.frames_upbound),
        single_image=single,
        unpad_rounding="truncate",
        base_image=base_image,
    )


# What the original computes from; the rest of VisualSettings (budget, degrading) is ours alone.
LAYOUT_SETTINGS = (
    "image_size", "patch_size", "single_image", "base_image", "unpad_rounding",
    "video_pool_stride", "video_pool_mode", "video_newline", "frames_upbound",
)


def reconcile(read: VisualSettings, ours: VisualSettings, where: str) -> VisualSettings:
    """Our stored settings (`onevision_visual`), checked against what the original reads.

    Raises:
        CheckpointError: a layout setting differs, so the original would lay out other tokens.
    """
    differ = [name for name in LAYOUT_SETTINGS if getattr(read, name) != getattr(ours, name)]
    if read.single_image == "anyres":
        differ += [name for name in ("anyres_max",) if read.anyres_max != ours.anyres_max]
        if read.pinpoints() != ours.pinpoints():
            differ.append("grid_pinpoints")
    if differ:
        name = differ[0]
        theirs = read.pinpoints() if name == "grid_pinpoints" else getattr(read, name)
        mine = ours.pinpoints() if name == "grid_pinpoints" else getattr(ours, name)
        raise CheckpointError(
            f"{where}: onevision_visual.{name} is {mine!r} but the mm_* fields LLaVA-NeXT reads give {theirs!r}; "
            "edit one to match the other"
        )
    return ours


def llava_fields(visual: VisualSettings) -> dict:
    """The `mm_*` / layout fields that make the original lay out what `visual` lays out.

    Raises:
        CheckpointError: a setting the original cannot express (named).
    """
    if visual.unpad_rounding != "truncate":
        raise CheckpointError(
            "visual.unpad_rounding 'round' (transformers) cannot be written in the LLaVA-NeXT layout: its unpad_image "
            "truncates, which changes token counts for some image sizes (369x820 at AnyRes-Max-9: 2381, not 2437). "
            "Use dataclasses.replace(config, visual=dataclasses.replace(config.visual, unpad_rounding='truncate')) first "
            "if the model should run that way"
        )
    if visual.video_pool_stride != ORIGINAL_POOL_STRIDE:
        raise CheckpointError(
            f"visual.video_pool_stride {visual.video_pool_stride} cannot be written in the LLaVA-NeXT layout: "
            f"it pools video with a fixed stride of {ORIGINAL_POOL_STRIDE}"
        )
    if visual.single_image == "anyres":
        if visual.base_image != "pad":
            raise CheckpointError("visual.base_image 'stretch' with single_image 'anyres' cannot be written in the LLaVA-NeXT layout")
        aspect = f"anyres_max_{visual.anyres_max}"
    else:
        aspect = "pad" if visual.base_image == "pad" else "square"
    return {
        "mm_patch_merge_type": "spatial_unpad",
        "image_aspect_ratio": aspect,
        "image_grid_pinpoints": [[w, h] for h, w in visual.pinpoints()],
        "mm_spatial_pool_stride": ORIGINAL_POOL_STRIDE,
        "mm_spatial_pool_mode": visual.video_pool_mode,
        "mm_newline_position": NEWLINE_TO_LLAVA[visual.video_newline],
        "frames_upbound": visual.frames_upbound,
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "add_faster_video": False,
        "mm_resampler_type": None,
    }

