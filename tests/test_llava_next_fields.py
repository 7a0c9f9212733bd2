"""Every layout field of an original LLaVA-NeXT `llava_qwen` config is honoured as the original applies it, or refused.

The reference is LLaVA-VL/LLaVA-NeXT at df179663ae8b83207df100a1f7af24caec633ff9. Its functions
that decide visual tokens and pixels are re-stated below as they are written there (names kept:
`get_2dPool`, `unpad_image`, `add_token_per_grid`, `add_token_per_frame`, `select_best_resolution`,
`resize_and_pad_image`, `divide_to_patches`, `expand2square`, the 'spatial_unpad' branch of
`prepare_inputs_labels_for_multimodal`), with `self.config` / `self.model` passed in, and our
planner, layout and pixels are compared with them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_model import random_image
from llava_next_folders import llava_video_config
from torch import nn

from onevision.budget import ImageMedia, VideoMedia, plan_sample
from onevision.checkpoint import CheckpointError
from onevision.checkpoint.llava_next_fields import FIELDS, llava_fields, visual_from_llava
from onevision.model.layout import layout_item
from onevision.processing import preprocess_item

# Config fields the original reads, from its source at df17966 (grep `config.`, `getattr(config`,
# `model_cfg`, `vision_tower_cfg`, `model_args` on a loaded config):
# llava/model/llava_arch.py: mm_vision_tower, delay_load, mm_patch_merge_type, hidden_size,
#   mm_spatial_pool_mode, mm_spatial_pool_stride, add_faster_video, faster_token_stride,
#   image_aspect_ratio, mm_newline_position, image_grid_pinpoints, tune_mm_mlp_adapter,
#   mm_use_im_start_end, tokenizer_model_max_length, tokenizer_padding_side, use_pos_skipping,
#   pos_skipping_range;
# llava/mm_utils.py (process_images and the crop_split path): image_aspect_ratio,
#   image_grid_pinpoints, image_crop_resolution, image_split_resolution;
# llava/model/language_model/llava_qwen.py: model_type, rope_scaling (set to None);
# llava/model/builder.py: mm_use_im_start_end, mm_use_im_patch_token, max_sequence_length,
#   max_position_embeddings, tokenizer_model_max_length;
# llava/model/multimodal_encoder/builder.py: mm_vision_tower, vision_tower, s2;
# llava/model/multimodal_encoder/siglip_encoder.py: unfreeze_mm_vision_tower, mm_tunable_parts;
#   clip_encoder.py (not used for SigLIP): mm_vision_select_layer, mm_vision_select_feature;
# llava/model/multimodal_projector/builder.py: mm_projector_type, mm_hidden_size, hidden_size;
# llava/model/multimodal_resampler/builder.py: mm_resampler_type;
# llava/train/train.py (data arguments it stores in config.json): frames_upbound,
#   add_time_instruction, force_sample.
ORIGINAL_FIELDS = (
    "mm_vision_tower", "delay_load", "mm_patch_merge_type", "hidden_size", "mm_spatial_pool_mode",
    "mm_spatial_pool_stride", "add_faster_video", "faster_token_stride", "image_aspect_ratio",
    "mm_newline_position", "image_grid_pinpoints", "tune_mm_mlp_adapter", "mm_use_im_start_end",
    "tokenizer_model_max_length", "tokenizer_padding_side", "use_pos_skipping", "pos_skipping_range",
    "image_crop_resolution", "image_split_resolution", "model_type", "rope_scaling",
    "mm_use_im_patch_token", "max_sequence_length", "max_position_embeddings", "vision_tower", "s2",
    "unfreeze_mm_vision_tower", "mm_tunable_parts", "mm_vision_select_layer", "mm_vision_select_feature",
    "mm_projector_type", "mm_hidden_size", "mm_resampler_type", "frames_upbound",
    "add_time_instruction", "force_sample",
)

# A value the original applies differently from us, for every field we accept only in part.
REFUSALS = {
    "model_type": "llava_llama",
    "mm_vision_tower": "openai/clip-vit-large-patch14-336",
    "mm_projector_type": "linear",
    "mm_hidden_size": 1024,
    "mm_resampler_type": "spatial_pool",
    "mm_patch_merge_type": "flat",
    "image_aspect_ratio": "crop_split",
    "mm_spatial_pool_mode": "nearest",
    "mm_spatial_pool_stride": 4,
    "mm_newline_position": "per_token",
    "add_faster_video": True,
    "mm_use_im_start_end": True,
    "use_pos_skipping": True,
}
# Fields mapped onto our settings, each checked against the original by a test below.
MAPPED_TESTS = {
    "mm_vision_tower": "test_released_folder_loads_and_answers",
    "vision_tower": "test_vision_tower_name_fallback",
    "hidden_size": "test_released_folder_loads_and_answers",
    "image_aspect_ratio": "test_anyres_tokens_and_features_match_the_original",
    "image_grid_pinpoints": "test_pinpoints_are_width_height",
    "mm_spatial_pool_mode": "test_video_pooling_matches_get_2dPool",
    "mm_newline_position": "test_video_pooling_matches_get_2dPool",
    "rope_scaling": "test_rope_scaling_is_dropped",
    "max_position_embeddings": "test_released_folder_loads_and_answers",
    "frames_upbound": "test_released_folder_loads_and_answers",
    # Fields acting around the weights (llava_next.OriginalRuntime), tested in another file.
    "mm_use_im_patch_token": "test_llava_next_runtime.py::test_patch_token_counts_when_the_builder_adds_it",
    "tokenizer_model_max_length": "test_llava_next_runtime.py::test_prompts_longer_than_tokenizer_model_max_length_are_refused",
    "add_time_instruction": "test_llava_next_runtime.py::test_add_time_instruction_gives_the_original_prompt",
}


# ---------------------------------------------------------------- the original, re-stated

def get_2dPool(image_feature, mm_spatial_pool_mode, num_patches_per_side, stride=2):
    height = width = num_patches_per_side
    num_frames, _, num_dim = image_feature.shape
    image_feature = image_feature.view(num_frames, height, width, -1)
    image_feature = image_feature.permute(0, 3, 1, 2).contiguous()
    if mm_spatial_pool_mode == "average":
        image_feature = nn.functional.avg_pool2d(image_feature, stride)
    elif mm_spatial_pool_mode == "max":
        image_feature = nn.functional.max_pool2d(image_feature, stride)
    elif mm_spatial_pool_mode == "bilinear":
        height, width = image_feature.shape[2:]
        scaled_shape = [math.ceil(height / stride), math.ceil(width / stride)]
        image_feature = nn.functional.interpolate(image_feature, size=scaled_shape, mode="bilinear")
    else:
        raise ValueError(f"Unexpected mm_spatial_pool_mode: {mm_spatial_pool_mode}")
    image_feature = image_feature.permute(0, 2, 3, 1)
    return image_feature.view(num_frames, -1, num_dim)


def add_token_per_grid(image_feature, image_newline):
    resize_h = int(math.sqrt(image_feature.shape[1]))
    num_frames = image_feature.shape[0]
    image_feature = image_feature.view(num_frames, 1, resize_h, resize_h, -1)
    image_feature = image_feature.permute(4, 0, 2, 1, 3).contiguous()
    image_feature = image_feature.flatten(1, 2).flatten(2, 3)
    image_feature = torch.cat((image_feature, image_newline[:, None, None].expand(*image_feature.shape[:-1], 1)), dim=-1)
    return image_feature.flatten(1, 2).transpose(0, 1)


def add_token_per_frame(image_feature, image_newline):
    image_feature = image_feature.permute(2, 0, 1).contiguous()
    image_feature = torch.cat((image_feature, image_newline[:, None, None].expand(*image_feature.shape[:-1], 1)), dim=-1)
    return image_feature.permute(1, 2, 0).contiguous()


def original_video(image_feature, mode, newline_position, side, image_newline):
    """The video branch of prepare_inputs_labels_for_multimodal (spatial_unpad)."""
    image_feature = get_2dPool(image_feature, mode, side)
    if newline_position == "grid":
        return add_token_per_grid(image_feature, image_newline)
    if newline_position == "frame":
        return add_token_per_frame(image_feature, image_newline).flatten(0, 1)
    if newline_position == "one_token":
        return torch.cat((image_feature.flatten(0, 1), image_newline[None]), dim=0)
    return image_feature.flatten(0, 1)


def unpad_image(tensor, original_size):
    original_width, original_height = original_size
    current_height, current_width = tensor.shape[1:]
    original_aspect_ratio = original_width / original_height
    current_aspect_ratio = current_width / current_height
    if original_aspect_ratio > current_aspect_ratio:
        scale_factor = current_width / original_width
        new_height = int(original_height * scale_factor)
        padding = (current_height - new_height) // 2
        return tensor[:, padding : current_height - padding, :]
    scale_factor = current_height / original_height
    new_width = int(original_width * scale_factor)
    padding = (current_width - new_width) // 2
    return tensor[:, :, padding : current_width - padding]


def select_best_resolution(original_size, possible_resolutions):
    original_width, original_height = original_size
    best_fit = None
    max_effective_resolution = 0
    min_wasted_resolution = float("inf")
    for width, height in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        downscaled_width, downscaled_height = int(original_width * scale), int(original_height * scale)
        effective_resolution = min(downscaled_width * downscaled_height, original_width * original_height)
        wasted_resolution = (width * height) - effective_resolution
        if effective_resolution > max_effective_resolution or (effective_resolution == max_effective_resolution and wasted_resolution < min_wasted_resolution):
            max_effective_resolution = effective_resolution
            min_wasted_resolution = wasted_resolution
            best_fit = (width, height)
    return best_fit


def original_anyres(image_feature, image_size_wh, grid_pinpoints, tile, side, image_aspect_ratio, image_newline):
    """The 'spatial_unpad' single-image branch: base view, then the unpadded (shrunk) map with row newlines."""
    base_image_feature, image_feature = image_feature[0], image_feature[1:]
    width, height = select_best_resolution(image_size_wh, grid_pinpoints)
    num_patch_width, num_patch_height = width // tile, height // tile
    image_feature = image_feature.view(num_patch_height, num_patch_width, side, side, -1)
    image_feature = image_feature.permute(4, 0, 2, 1, 3).contiguous().flatten(1, 2).flatten(2, 3)
    image_feature = unpad_image(image_feature, image_size_wh)
    if image_aspect_ratio.startswith("anyres_max_"):
        max_num_patches = int(image_aspect_ratio.removeprefix("anyres_max_"))
        _, h, w = image_feature.shape
        times = math.sqrt(h * w / (max_num_patches * side**2))
        if times > 1.1:
            image_feature = nn.functional.interpolate(image_feature[None], [int(h // times), int(w // times)], mode="bilinear")[0]
    image_feature = torch.cat((image_feature, image_newline[:, None, None].expand(*image_feature.shape[:-1], 1)), dim=-1)
    image_feature = image_feature.flatten(1, 2).transpose(0, 1)
    return torch.cat((base_image_feature, image_feature), dim=0)


def siglip_preprocess(image):
    """SigLipImageProcessor.preprocess of one PIL image: bicubic resize to 384, x/255, (x-0.5)/0.5."""
    array = np.asarray(image.resize((384, 384), 3) if image.size != (384, 384) else image)
    array = (array.astype(np.float64) * (1 / 255)).astype(np.float32)
    array = (array - np.float32(0.5)) / np.float32(0.5)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def process_anyres_image(image, grid_pinpoints):
    from PIL import Image

    best_resolution = select_best_resolution(image.size, grid_pinpoints)
    original_width, original_height = image.size
    target_width, target_height = best_resolution
    scale_w, scale_h = target_width / original_width, target_height / original_height
    if scale_w < scale_h:
        new_width, new_height = target_width, min(math.ceil(original_height * scale_w), target_height)
    else:
        new_height, new_width = target_height, min(math.ceil(original_width * scale_h), target_width)
    resized_image = image.resize((new_width, new_height))
    image_padded = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    image_padded.paste(resized_image, ((target_width - new_width) // 2, (target_height - new_height) // 2))
    patches = [image_padded.crop((j, i, j + 384, i + 384)) for i in range(0, target_height, 384) for j in range(0, target_width, 384)]
    image_patches = [image.resize((384, 384))] + patches
    return torch.stack([siglip_preprocess(p) for p in image_patches])


def expand2square(pil_img, background_color):
    from PIL import Image

    width, height = pil_img.size
    if width == height:
        return pil_img
    if width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    result = Image.new(pil_img.mode, (height, height), background_color)
    result.paste(pil_img, ((height - width) // 2, 0))
    return result


# ---------------------------------------------------------------- helpers

WHERE = "config.json"


def settings_for(**fields):
    """Our visual settings for the released LLaVA-Video config with `fields` replaced (384 px, patch 14)."""
    return visual_from_llava(llava_video_config(**fields), WHERE, 384, 14)


def released_pinpoints():
    return llava_video_config()["image_grid_pinpoints"]


# ---------------------------------------------------------------- every field is handled

def test_every_field_the_original_reads_is_honoured_or_refused():
    unknown = [f for f in ORIGINAL_FIELDS if f not in FIELDS]
    assert not unknown, f"fields the original reads that llava_next_fields.FIELDS does not handle: {unknown}"
    kinds = {f: FIELDS[f].split(":")[0] for f in FIELDS}
    assert all(k.startswith(("mapped", "no effect", "refused unless")) for k in kinds.values()), kinds
    refused = {f for f, k in kinds.items() if k.startswith("refused unless")}
    assert set(REFUSALS) <= set(FIELDS)
    assert refused <= set(REFUSALS), f"refused fields without a refusal test: {refused - set(REFUSALS)}"
    mapped = {f for f, k in kinds.items() if k.startswith("mapped")}
    assert mapped <= set(MAPPED_TESTS), f"mapped fields without a test against the original: {mapped - set(MAPPED_TESTS)}"
    for test in MAPPED_TESTS.values():
        file, _, name = test.rpartition("::")
        assert (f"def {name}(" in Path(__file__).with_name(file).read_text()) if file else name in globals(), test


@pytest.mark.parametrize("field", sorted(REFUSALS))
def test_refused_values_name_their_field(tmp_path, field):
    import json

    from onevision.checkpoint import read_llava_next_config

    (tmp_path / "config.json").write_text(json.dumps(llava_video_config(**{field: REFUSALS[field]})))
    with pytest.raises(CheckpointError, match=field):
        read_llava_next_config(tmp_path)


def test_vision_tower_name_fallback():
    data = llava_video_config()
    data["vision_tower"] = data.pop("mm_vision_tower")
    assert visual_from_llava(data, WHERE, 384, 14).image_size == 384
    data["vision_tower"] = "openai/clip-vit-large-patch14"
    with pytest.raises(CheckpointError, match="mm_vision_tower 'openai/clip"):
        visual_from_llava(data, WHERE, 384, 14)


def test_rope_scaling_is_dropped(tmp_path):
    import json

    from onevision.checkpoint import read_llava_next_config

    data = llava_video_config(rope_scaling={"type": "linear", "factor": 4.0})
    (tmp_path / "config.json").write_text(json.dumps(data))
    text = read_llava_next_config(tmp_path).text
    assert text.rope_theta == data["rope_theta"] and not getattr(text, "rope_scaling", None)


# ---------------------------------------------------------------- video: pooling and newlines

@pytest.mark.parametrize("mode", ["average", "max", "bilinear"])
@pytest.mark.parametrize("newline", ["grid", "frame", "one_token", "no_token"])
def test_video_pooling_matches_get_2dPool(mode, newline):
    settings = settings_for(pool_mode=mode, newline=newline)
    plan = plan_sample([VideoMedia(3)], settings).items[0]
    torch.manual_seed(0)
    tiles, image_newline = torch.randn(3, 27 * 27, 8), torch.randn(8)
    theirs = original_video(tiles, mode, newline, 27, image_newline)
    ours = layout_item(plan, tiles, image_newline)
    assert ours.shape == theirs.shape and plan.tokens == theirs.shape[0]
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("mode", ["average", "max", "bilinear"])
@pytest.mark.parametrize("stride", [2, 3, 4])
def test_stronger_pooling_of_a_budget_keeps_plan_and_features_together(mode, stride):
    # Degrading to fit a budget raises the stride; a 9x9 map shows floor vs ceil at every stride.
    import dataclasses

    settings = visual_from_llava(llava_video_config(pool_mode=mode, image_aspect_ratio="pad"), WHERE, 72, 8)
    plan = plan_sample([VideoMedia(2)], dataclasses.replace(settings, video_pool_stride=stride)).items[0]
    torch.manual_seed(stride)
    tiles, image_newline = torch.randn(2, 81, 4), torch.randn(4)
    theirs = add_token_per_grid(get_2dPool(tiles, mode, 9, stride), image_newline)
    assert plan.tokens == theirs.shape[0] and torch.equal(layout_item(plan, tiles, image_newline), theirs)


def test_released_video_token_counts():
    # 27x27 map, stride 2: average / max pool to 13x13 (floor), bilinear to 14x14 (ceil).
    per_frame = {("average", "grid"): 13 * 14, ("max", "grid"): 13 * 14, ("bilinear", "grid"): 14 * 15,
                 ("average", "frame"): 13 * 13 + 1, ("bilinear", "no_token"): 14 * 14}
    for (mode, newline), tokens in per_frame.items():
        assert plan_sample([VideoMedia(64)], settings_for(pool_mode=mode, newline=newline)).total == 64 * tokens
    assert plan_sample([VideoMedia(64)], settings_for(newline="one_token")).total == 64 * 169 + 1
    assert plan_sample([VideoMedia(100)], settings_for()).items[0].frames == 64  # frames_upbound


# ---------------------------------------------------------------- single image: AnyRes

@pytest.mark.parametrize("aspect", ["anyres_max_9", "anyres_max_4", "anyres"])
@pytest.mark.parametrize("size", [(369, 820), (820, 369), (640, 480), (1000, 300), (384, 384), (2000, 2100)])
def test_anyres_tokens_and_features_match_the_original(aspect, size):
    width, height = size
    settings = settings_for(image_aspect_ratio=aspect)
    plan = plan_sample([ImageMedia(width, height)], settings).items[0]
    torch.manual_seed(0)
    tiles, image_newline = torch.randn(plan.num_tiles, 27 * 27, 4), torch.randn(4)
    theirs = original_anyres(tiles, (width, height), released_pinpoints(), 384, 27, aspect, image_newline)
    ours = layout_item(plan, tiles, image_newline)
    assert plan.tokens == theirs.shape[0]
    assert torch.equal(ours, theirs)


def test_truncating_unpad_differs_from_transformers_where_documented():
    # 369 wide, 820 high at AnyRes-Max-9: LLaVA-NeXT's int(x) keeps 2381 tokens, transformers' round 2437.
    import dataclasses

    settings = settings_for()
    assert plan_sample([ImageMedia(369, 820)], settings).total == 2381
    assert plan_sample([ImageMedia(369, 820)], dataclasses.replace(settings, unpad_rounding="round")).total == 2437


def test_pinpoints_are_width_height():
    # One 2-wide, 1-high grid, as LLaVA-NeXT reads [[768, 384]]: a wide image gets 2 columns of crops.
    settings = settings_for(image_grid_pinpoints=[[768, 384]])
    plan = plan_sample([ImageMedia(800, 400)], settings).items[0]
    assert plan.best_resolution == (384, 768) and plan.grid == (1, 2)
    assert select_best_resolution((800, 400), [[768, 384]]) == (768, 384)
    for text in ("[(768, 384)]", "(2x1),...,(2x1)"):
        assert settings_for(image_grid_pinpoints=text).pinpoints() == [(384, 768)]
    mixed = [[384, 768], [768, 384], [1152, 384], [384, 1152]]
    for size in [(300, 700), (700, 300), (1000, 200), (200, 1000)]:
        plan = plan_sample([ImageMedia(*size)], settings_for(image_grid_pinpoints=mixed)).items[0]
        width, height = select_best_resolution(size, mixed)
        assert plan.grid == (height // 384, width // 384)


def test_anyres_pixels_match_process_anyres_image():
    image = random_image(500, 300, seed=1)
    settings = settings_for()
    plan = plan_sample([ImageMedia(500, 300)], settings).items[0]
    ours = preprocess_item(image, plan, 384)
    theirs = process_anyres_image(image, released_pinpoints())
    assert ours.shape == theirs.shape and torch.equal(ours, theirs)


@pytest.mark.parametrize("aspect", ["pad", "square", None])
def test_base_image_aspect_ratios(aspect):
    image = random_image(300, 200, seed=2)
    fields = {"image_aspect_ratio": aspect} if aspect else {}
    data = llava_video_config(**fields)
    if aspect is None:
        del data["image_aspect_ratio"]
    settings = visual_from_llava(data, WHERE, 384, 14)
    plan = plan_sample([ImageMedia(300, 200)], settings)
    assert plan.total == 27 * 27 + 1  # one image of [1, 3, S, S]: "single image operations" add one newline
    expected = siglip_preprocess(expand2square(image, (127, 127, 127)) if aspect == "pad" else image)
    assert torch.equal(preprocess_item(image, plan.items[0], 384)[0], expected)


def test_video_pixels_match_the_siglip_processor():
    frames = np.random.default_rng(3).integers(0, 256, (2, 30, 50, 3), dtype=np.uint8)
    plan = plan_sample([VideoMedia(2)], settings_for()).items[0]
    from PIL import Image

    theirs = torch.stack([siglip_preprocess(Image.fromarray(frame)) for frame in frames])
    assert torch.equal(preprocess_item(frames, plan, 384), theirs)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"image_grid_pinpoints": None}, "image_aspect_ratio 'anyres_max_9': needs image_grid_pinpoints"),
        ({"image_grid_pinpoints": [[500, 384]]}, "image_grid_pinpoints .* is not a grid of 384 px crops"),
        ({"image_grid_pinpoints": "[(1, 2, 3)]"}, "image_grid_pinpoints .* not a list of \\(width, height\\) pairs"),
        ({"image_aspect_ratio": "anyres_max_0"}, "image_aspect_ratio 'anyres_max_0': N must be at least 1"),
        ({"mm_patch_merge_type": "spatial_unpad_maxpool2x2"}, "mm_patch_merge_type"),
        ({"mm_patch_merge_type": "spatial_unpad_nobase"}, "mm_patch_merge_type"),
    ],
)
def test_layout_values_the_original_applies_otherwise_are_refused(fields, message):
    with pytest.raises(CheckpointError, match=message):
        settings_for(**fields)


def test_merge_type_variants_that_behave_as_spatial_unpad():
    # The original tests substrings: any 'spatial*unpad*' name without maxpool2x2 / nobase is spatial_unpad.
    assert settings_for(mm_patch_merge_type="spatial_unpad_anyres_max_9") == settings_for()


# ---------------------------------------------------------------- export

def test_export_writes_what_the_original_reads_back():
    for fields in ({}, {"pool_mode": "max", "newline": "frame"}, {"image_aspect_ratio": "pad"},
                   {"image_aspect_ratio": "square"}, {"image_grid_pinpoints": [[768, 384], [384, 384]]}):
        settings = settings_for(**fields)
        written = llava_video_config(**llava_fields(settings))
        again = visual_from_llava(written, WHERE, 384, 14)
        assert again == settings


def test_export_refuses_what_the_original_cannot_express():
    import dataclasses

    settings = settings_for()
    for change, field in (({"unpad_rounding": "round"}, "unpad_rounding"), ({"video_pool_stride": 3}, "video_pool_stride"),
                          ({"base_image": "stretch"}, "base_image")):
        with pytest.raises(CheckpointError, match=field):
            llava_fields(dataclasses.replace(settings, **change))


def test_save_llava_next_refuses_by_name_and_reconciles(tmp_path):
    import dataclasses
    import json

    from helpers_model import tiny_config
    from llava_next_folders import truncating

    from onevision.checkpoint import read_llava_next_config, save_llava_next
    from onevision.model.onevision import OneVisionModel

    with pytest.raises(CheckpointError, match="unpad_rounding"):
        save_llava_next(OneVisionModel(tiny_config()), tmp_path / "round", progress=False)
    config = truncating(tiny_config())
    config = dataclasses.replace(config, visual=dataclasses.replace(config.visual, video_pool_mode="average", video_newline="row"))
    save_llava_next(OneVisionModel(config), tmp_path / "ok", progress=False)
    data = json.loads((tmp_path / "ok" / "config.json").read_text())
    assert (data["mm_spatial_pool_mode"], data["mm_newline_position"], data["mm_spatial_pool_stride"]) == ("average", "grid", 2)
    assert read_llava_next_config(tmp_path / "ok").visual == config.visual
    older = {**data, "onevision_visual": {k: v for k, v in data["onevision_visual"].items() if k != "video_pool_mode"}}
    (tmp_path / "ok" / "config.json").write_text(json.dumps(older))  # written before video_pool_mode existed
    assert read_llava_next_config(tmp_path / "ok").visual == config.visual
    data["mm_spatial_pool_mode"] = "max"  # edited by hand: now disagrees with onevision_visual
    (tmp_path / "ok" / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="onevision_visual.video_pool_mode is 'average' but .* give 'max'"):
        read_llava_next_config(tmp_path / "ok")


# ---------------------------------------------------------------- the released LLaVA-Video folder, replicated

@pytest.fixture(scope="module")
def llava_video(tmp_path_factory):
    from llava_next_folders import llava_video_folder

    from onevision.infer.pipeline import OneVision

    folder = llava_video_folder(tmp_path_factory.mktemp("llava-video"))
    return folder, OneVision.from_pretrained(folder)


def original_tower_and_projector(folder):
    """SigLipVisionTower + mlp2x_gelu built as LLaVA-NeXT builds them, weights from the folder's file."""
    import json

    from safetensors.torch import load_file
    from transformers import SiglipVisionConfig, SiglipVisionModel

    data = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "model.safetensors"))
    tower = SiglipVisionModel(SiglipVisionConfig(**{k: v for k, v in data["vision_config"].items() if k != "model_type"}))
    # transformers 5 keeps SiglipVisionModel's modules at the top level (no `.vision_model`).
    prefix = "model.vision_tower.vision_tower.vision_model."
    result = tower.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=False)
    assert all(k.startswith("head.") for k in result.missing_keys)  # the file holds the whole tower
    del tower.encoder.layers[-1:]
    tower.head = nn.Identity()
    width = data["hidden_size"]
    projector = nn.Sequential(nn.Linear(data["mm_hidden_size"], width), nn.GELU(), nn.Linear(width, width))
    projector.load_state_dict({k.removeprefix("model.mm_projector."): v for k, v in state.items() if k.startswith("model.mm_projector.")})
    return tower.eval(), projector, state["model.image_newline"]


def test_released_folder_loads_and_answers(llava_video):
    folder, pipe = llava_video
    config = pipe.model.config
    assert (config.text.vocab_size, config.text.max_position_embeddings, config.text.hidden_size) == (152064, 32768, 32)
    assert (config.vision.image_size, config.vision.patch_size, config.vision.num_hidden_layers) == (384, 14, 2)
    visual = config.visual
    assert (visual.video_pool_mode, visual.video_newline, visual.frames_upbound, visual.unpad_rounding) == ("average", "row", 64, "truncate")
    frames = np.random.default_rng(0).integers(0, 256, (4, 48, 64, 3), dtype=np.uint8)
    prepared = pipe.prepare({"question": "What happens?", "video": frames})
    assert prepared.media.plan.total == 4 * 182  # 13x13 per frame plus a newline per row
    assert int((prepared.input_ids == config.video_token_id).sum()) == 4 * 182
    with torch.no_grad():
        _, ours = pipe.model.encode_visual(prepared.visual)
        tower, projector, image_newline = original_tower_and_projector(folder)
        hidden = tower(prepared.visual.pixel_values, output_hidden_states=True).hidden_states[-1]
        theirs = original_video(projector(hidden), "average", "grid", 27, image_newline)
    assert ours.shape == theirs.shape and (ours - theirs).abs().max().item() < 1e-5
    answer = pipe.ask("What happens?", video=frames, max_new_tokens=2)
    assert isinstance(answer, str)


def test_transformers_export_names_the_original_only_settings():
    import dataclasses

    from helpers_model import tiny_config

    from onevision.checkpoint.hf import not_in_transformers

    base = tiny_config()
    assert not not_in_transformers(base)
    for name, value in (("video_pool_mode", "average"), ("unpad_rounding", "truncate"), ("base_image", "stretch")):
        problems = not_in_transformers(dataclasses.replace(base, visual=dataclasses.replace(base.visual, **{name: value})))
        assert len(problems) == 1 and problems[0].startswith(f"visual.{name}={value!r}")
