"""LLaVA v1 / 1.5 in the same composition: parity with transformers' `llava` (LlavaForConditionalGeneration).

Tiny configs (the `llava15-debug` / `llava-v1-debug` presets: CLIP 32 px / 8 px patches, Llama
width 64). Checked against transformers: placeholder counts (`LlavaProcessor`'s rule), pixels
(`LlavaImageProcessorPil`, pad-to-square with the CLIP mean colour and shortest-side + centre
crop), logits in fp32 both ways through saved folders (ours loads in transformers with no
missing or unexpected keys), greedy generation, and lists of feature layers in `llava` and
`llava_onevision` alike.
"""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch
from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from helpers_model import Sample, model_pair, prompt_ids, random_frames, random_image, tiny_config
from transformers import LlavaForConditionalGeneration
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
from transformers.models.llava.processing_llava import LlavaProcessor

from onevision.budget import ImageMedia, plan_sample
from onevision.checkpoint import CheckpointError, load_checkpoint
from onevision.checkpoint.llava_hf import llava_hf_config, save_llava_hf
from onevision.model.config import preset
from onevision.model.generate import generate
from onevision.model.onevision import OneVisionModel
from onevision.processing import CLIP, preprocess_item
from onevision.visual_batch import VisualBatch

TOL = 1e-4
SIZES = [(40, 30), (30, 50), (32, 32), (97, 13)]
VARIANTS = {
    "llava15": {},
    "cls-kept": {"vision_feature_select_strategy": "full"},
    "layer-list": {"vision_feature_layer": (-2, 0, -1)},
    "crop": {"visual": dataclasses.replace(preset("llava15-debug").visual, base_image="crop")},
    # The other parts in transformers' llava: a SigLIP tower (no class token) and a Qwen2 decoder.
    "siglip-qwen2": {
        "vision_tower": "siglip", "vision_feature_select_strategy": "full", "text_model": "qwen2",
        "vision": dataclasses.replace(preset("debug").vision, image_size=32), "text": preset("debug").text,
    },
}


def config_of(variant: str):
    return dataclasses.replace(preset("llava15-debug"), **VARIANTS[variant])


def hf_processor(config) -> LlavaImageProcessorPil:
    side = config.vision.image_size
    return LlavaImageProcessorPil(
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        do_pad=config.visual.base_image == "pad",
        image_mean=list(CLIP.mean),
        image_std=list(CLIP.std),
    )


def hf_token_count(config, width: int, height: int) -> int:
    """Placeholders transformers' `LlavaProcessor` writes for one image (after its resize and crop)."""
    side = config.vision.image_size
    processor = types.SimpleNamespace(
        patch_size=config.vision.patch_size,
        num_additional_image_tokens=int(config.vision_tower == "clip"),
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        image_token="i",
    )
    pixels = {"pixel_values": torch.zeros(1, 3, side, side)}
    return len(LlavaProcessor.replace_image_token(processor, pixels, 0))


def our_sample(config, seed: int = 0):
    """(input_ids [T], VisualBatch) for one image of an odd size."""
    image = random_image(*SIZES[seed % len(SIZES)], seed=seed)
    plan = plan_sample([ImageMedia(image.width, image.height)], config.visual).items[0]
    pixels = preprocess_item(image, plan, config.vision.image_size, CLIP)
    ids = prompt_ids([(config.image_token_id, plan.tokens)], seed=seed, vocab=400)
    return ids, VisualBatch(pixels, [plan]), image


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("width, height", SIZES)
def test_placeholders_and_pixels_equal_transformers(variant, width, height):
    config = config_of(variant)
    plan = plan_sample([ImageMedia(width, height)], config.visual).items[0]
    assert plan.tokens == hf_token_count(config, width, height)
    assert plan.tokens == {"cls-kept": 17, "siglip-qwen2": 16}.get(variant, 16)
    image = random_image(width, height, seed=width)
    ours = preprocess_item(image, plan, config.vision.image_size, CLIP)
    theirs = hf_processor(config)(image, return_tensors="pt")["pixel_values"]
    assert torch.equal(ours, theirs)


def test_pad_colour_is_the_clip_mean():
    assert CLIP.background == (122, 116, 104)
    config = preset("llava15-debug")
    image = random_image(64, 16, seed=3)  # 4:1 -> a padded band above and below
    plan = plan_sample([ImageMedia(64, 16)], config.visual).items[0]
    pixels = preprocess_item(image, plan, config.vision.image_size, CLIP)
    corner = pixels[0, :, 0, 0]
    expected = (torch.tensor(CLIP.background) / 255 - torch.tensor(CLIP.mean)) / torch.tensor(CLIP.std)
    assert torch.allclose(corner, expected.float(), atol=1e-6)


def test_presets_have_the_released_token_counts_and_sizes():
    counts = {name: plan_sample([ImageMedia(800, 600)], preset(name).visual).total for name in ("llava15-7b", "llava15-13b", "llava-v1-7b")}
    assert counts == {"llava15-7b": 576, "llava15-13b": 576, "llava-v1-7b": 256}
    params = {name: OneVisionModel.from_config(preset(name), device="meta").num_parameters() for name in ("llava15-7b", "llava-v1-7b")}
    assert 7.0e9 < params["llava15-7b"] < 7.1e9 and 7.0e9 < params["llava-v1-7b"] < 7.1e9
    v1 = OneVisionModel(preset("llava-v1-debug"))
    assert [k for k in v1.state_dict() if k.startswith("projector.")] == ["projector.linear_1.weight", "projector.linear_1.bias"]
    assert v1.image_newline is None


def _transformers_twin(config, seed: int = 0) -> LlavaForConditionalGeneration:
    hf_config = llava_hf_config(config)
    hf_config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(hf_config).eval()


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_logits_equal_transformers_both_ways(variant, tmp_path):
    config = config_of(variant)
    ids, visual, image = our_sample(config, seed=1)
    theirs_model = _transformers_twin(config)
    theirs_model.save_pretrained(tmp_path / "theirs")
    ours_loaded = load_checkpoint(tmp_path / "theirs", progress=False)
    assert ours_loaded.config == config
    pixel_values = hf_processor(config)(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        reference = theirs_model(input_ids=ids[None], pixel_values=pixel_values).logits
        got = ours_loaded(ids[None], visual=visual).logits
    assert (got - reference).abs().max().item() <= TOL

    torch.manual_seed(5)
    ours = OneVisionModel(config).eval()
    save_llava_hf(ours, tmp_path / "ours", progress=False)
    back, info = LlavaForConditionalGeneration.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        reference = ours(ids[None], visual=visual).logits
        got = back.eval()(input_ids=ids[None], pixel_values=pixel_values).logits
    assert (got - reference).abs().max().item() <= TOL
    assert (got - theirs_model(input_ids=ids[None], pixel_values=pixel_values).logits).abs().max() > 1e-2


def test_greedy_generation_equals_transformers(tmp_path):
    config = preset("llava15-debug")
    theirs = _transformers_twin(config, seed=2)
    theirs.save_pretrained(tmp_path)
    ours = load_checkpoint(tmp_path, progress=False)
    ids, visual, image = our_sample(config, seed=2)
    pixel_values = hf_processor(config)(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        reference = theirs.generate(
            input_ids=ids[None], attention_mask=torch.ones_like(ids[None]), pixel_values=pixel_values,
            do_sample=False, max_new_tokens=8, pad_token_id=0, eos_token_id=None,
        )[0, ids.numel():]
    assert torch.equal(generate(ours, ids, visual, max_new_tokens=8), reference)


def test_feature_layer_list_equals_transformers_llava_onevision():
    config = tiny_config(vision_feature_layer=(-1, 0))
    hf, ours = model_pair(config)
    assert ours.projector.linear_1.in_features == 2 * config.vision.hidden_size
    sample = Sample(config, [random_image(70, 40, seed=4)], video=random_frames(3), seed=4)
    with torch.no_grad():
        reference = hf(input_ids=sample.input_ids[None], **sample.hf_kwargs).logits
        got = ours(sample.input_ids[None], visual=sample.visual).logits
    assert (got - reference).abs().max().item() <= TOL


def test_llava_refuses_what_it_cannot_express(tmp_path):
    with pytest.raises(CheckpointError, match="projector_type='linear'"):
        save_llava_hf(OneVisionModel(preset("llava-v1-debug")), tmp_path / "v1", progress=False)
    with pytest.raises(CheckpointError, match="use_image_newline=True"):
        llava_hf_config(preset("debug"))
    with pytest.raises(ValueError, match="vision_feature_select_strategy 'default'.*siglip"):
        dataclasses.replace(preset("debug"), vision_feature_select_strategy="default")
    with pytest.raises(ValueError, match="takes no video"):
        plan = plan_sample([ImageMedia(8, 8)], preset("debug").visual).items[0]
        video = dataclasses.replace(plan)
        object.__setattr__(video, "kind", "video")
        model = OneVisionModel(preset("llava15-debug"))
        model.embed(torch.tensor([[1]]), VisualBatch(torch.zeros(plan.num_tiles, 3, 32, 32), [video]))


def test_tokens_command_counts_per_family(capsys):
    import json

    from onevision.cli.main import main

    totals = {}
    for size in ("llava15-7b", "llava-v1-7b", "0.5b"):
        assert main(["tokens", "--visual-preset", size, "--image", "640x480", "--json"]) == 0
        totals[size] = json.loads(capsys.readouterr().out)["total"]
    assert totals == {"llava15-7b": 576, "llava-v1-7b": 256, "0.5b": 2929}


@pytest.mark.parametrize("name", ["llava15-debug", "llava-v1-debug", "cls-kept", "layer-list", "siglip-qwen2"])
def test_planned_tokens_are_the_tokens_produced(name):
    config = preset(name) if name in ("llava15-debug", "llava-v1-debug") else config_of(name)
    model = OneVisionModel(config).eval()
    images = [random_image(w, h, seed=w) for w, h in SIZES]
    for group in ([images[0]], images):  # one image, then a set: each its base tokens, no newline
        plan = plan_sample([ImageMedia(im.width, im.height) for im in group], config.visual)
        pixels = torch.cat([preprocess_item(im, item, config.vision.image_size, CLIP) for im, item in zip(group, plan.items)])
        with torch.no_grad():
            produced, videos = model.encode_visual(VisualBatch(pixels, list(plan.items)))
        assert produced.shape[0] == plan.total == len(group) * config.visual.base_tokens and videos.shape[0] == 0
