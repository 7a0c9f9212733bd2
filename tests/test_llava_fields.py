"""Every field of transformers' LlavaConfig, CLIPVisionConfig and LlamaConfig is honoured, refused or
inert (onevision.model.llava_fields), and the honoured ones act as in transformers.

The fields are enumerated from the installed transformers, so a release that adds one fails here
until it is sorted. Honoured fields set to non-default values on a tiny LLaVA-1.5 model, saved as
transformers saves it and loaded through `load_checkpoint`, give transformers' logits (fp32,
1e-4), and other logits than the default value, so a dropped field fails the test.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch
from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from onevision.checkpoint import CheckpointError, load_checkpoint
from onevision.checkpoint.llava_hf import llava_hf_config
from onevision.model import llava_fields
from onevision.model.config import TextConfig, VisionConfig, preset

TOL = 1e-4
TABLES = {
    LlamaConfig: (llava_fields.LLAMA_HONOURED, llava_fields.LLAMA_REFUSED, llava_fields.LLAMA_INERT),
    CLIPVisionConfig: (llava_fields.CLIP_HONOURED, llava_fields.CLIP_REFUSED, llava_fields.CLIP_INERT),
    LlavaConfig: (llava_fields.LLAVA_HONOURED, llava_fields.LLAVA_REFUSED, llava_fields.LLAVA_INERT),
}


@pytest.mark.parametrize("cls", list(TABLES), ids=lambda c: c.__name__)
def test_every_transformers_field_is_sorted(cls):
    honoured, refused, inert = TABLES[cls]
    fields = set(cls().to_dict()) | {f.name for f in dataclasses.fields(cls)}
    unsorted = sorted(fields - set(honoured) - set(refused) - set(inert))
    assert not unsorted, f"{cls.__name__} fields neither honoured, refused nor inert: {unsorted}"
    assert not set(honoured) & set(refused) and not set(honoured) & set(inert) and not set(refused) & set(inert)


def test_honoured_fields_land_in_our_configs():
    vision = {name for target in llava_fields.CLIP_HONOURED.values() for name in target.split(" + ")}
    text = {name for target in llava_fields.LLAMA_HONOURED.values() for name in target.split(" + ")}
    assert vision == {f.name for f in dataclasses.fields(VisionConfig)}
    assert text <= {f.name for f in dataclasses.fields(TextConfig)}


def _saved(tmp_path, text=None, vision=None, **top):
    data = llava_hf_config(preset("llava15-debug")).to_dict()
    data["text_config"].update(text or {})
    data["vision_config"].update(vision or {})
    data.update(top)
    hf = LlavaConfig.from_dict(data)
    hf._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(hf).eval()
    model.save_pretrained(tmp_path)
    return model, hf


def _logits(model, ids, pixels):
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pixels).logits


CASES = [
    ("rms_norm_eps", {"rms_norm_eps": 0.5}, None, {}),
    ("text_hidden_act", {"hidden_act": "gelu"}, None, {}),
    ("rope_llama3", {"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8, "rope_theta": 10000.0}}, None, {}),
    ("vision_hidden_act", None, {"hidden_act": "gelu"}, {}),
    ("layer_norm_eps", None, {"layer_norm_eps": 0.5}, {}),
    ("projector_hidden_act", None, None, {"projector_hidden_act": "relu"}),
    ("vision_feature_layer", None, None, {"vision_feature_layer": -1}),
    ("vision_feature_select_strategy", None, None, {"vision_feature_select_strategy": "full"}),
]


@pytest.mark.parametrize("case_id, text, vision, top", CASES, ids=[c[0] for c in CASES])
def test_honoured_field_gives_transformers_logits(tmp_path, case_id, text, vision, top):
    theirs, hf = _saved(tmp_path, text, vision, **top)
    ours = load_checkpoint(tmp_path, progress=False)
    tokens = ours.config.visual.base_tokens
    ids = torch.tensor([[3, 4] + [ours.config.image_token_id] * tokens + [5, 6, 7]])
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    from onevision.budget import BaseImagePlan
    from onevision.visual_batch import VisualBatch

    plan = BaseImagePlan(width=32, height=32, base_tokens=tokens, newline=False)
    expected = _logits(theirs, ids, pixels)
    with torch.no_grad():
        mine = ours(ids, visual=VisualBatch(pixels, [plan])).logits
    assert (expected - mine).abs().max().item() <= TOL
    if case_id == "vision_feature_select_strategy":
        assert tokens == 17  # the class token is one more placeholder
        return
    plain = LlavaForConditionalGeneration(LlavaConfig.from_dict(llava_hf_config(preset("llava15-debug")).to_dict())).eval()
    plain.load_state_dict(theirs.state_dict())
    assert (_logits(plain, ids, pixels) - expected).abs().max().item() > 1e-3, f"{case_id} does not change logits here"


REFUSED = [
    ("head_dim", "text_config", 8),
    ("attention_bias", "text_config", True),
    ("mlp_bias", "text_config", True),
    ("pretraining_tp", "text_config", 2),
    ("num_channels", "vision_config", 4),
    ("multimodal_projector_bias", None, False),
    ("quantization_config", None, {"quant_method": "bitsandbytes"}),
    ("vision_feature_layer", None, []),
    ("model_type", "text_config", "mistral"),
]


@pytest.mark.parametrize("field, sub, value", REFUSED, ids=[f"{s or 'top'}.{f}" for f, s, _ in REFUSED])
def test_refused_field_is_named(tmp_path, field, sub, value):
    _saved(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    (data[sub] if sub else data)[field] = value
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=field):
        load_checkpoint(tmp_path, progress=False)


def test_unknown_keys_are_named_in_a_warning(tmp_path, caplog):
    _saved(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["text_config"]["shiny_new_field"] = 1
    (tmp_path / "config.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        load_checkpoint(tmp_path, progress=False)
    assert "shiny_new_field" in caplog.text


@pytest.mark.parametrize(
    "field, value",
    [("do_pad", False), ("size", {"height": 32, "width": 32}), ("crop_size", {"height": 24, "width": 24}), ("do_center_crop", False)],
)
def test_preprocessor_fields_that_change_pixels_are_checked(tmp_path, field, value):
    from onevision.checkpoint.llava_hf import save_llava_hf
    from onevision.model.onevision import OneVisionModel

    save_llava_hf(OneVisionModel(preset("llava15-debug")), tmp_path, progress=False)
    data = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert data["do_pad"] is True  # LLaVA-1.5 pads to a square
    data[field] = value
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=field):
        load_checkpoint(tmp_path, progress=False)
