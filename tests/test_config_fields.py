"""Every field of transformers' Qwen2Config, SiglipVisionConfig and LlavaOnevisionConfig is honoured,
refused or inert (onevision.model.hf_fields), and the honoured ones act as in transformers.

The fields are enumerated from the installed transformers, so a release that adds one fails
here until it is sorted. Each honoured field that changes logits or tokens is set to a
non-default value on one tiny model, saved as transformers saves it
(`LlavaOnevisionForConditionalGeneration.save_pretrained`) and loaded through `load_hf`: the
logits must be transformers' to 1e-4 (fp32), and the same weights under the default value must
give other logits (or another token count), so a dropped field fails the test.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil

import pytest
import torch
from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from helpers_model import Sample, random_frames, random_image, tiny_config
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, Qwen2Config, SiglipVisionConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, RopeParameters

from onevision.checkpoint import CheckpointError, load_hf, read_hf_config
from onevision.checkpoint.components import read_vision_config, text_config_from_qwen2
from onevision.model import hf_fields
from onevision.model.config import TextConfig, VisionConfig

TOL = 1e-4
TABLES = {
    Qwen2Config: (hf_fields.QWEN2_HONOURED, hf_fields.QWEN2_REFUSED, hf_fields.QWEN2_INERT),
    SiglipVisionConfig: (hf_fields.SIGLIP_HONOURED, hf_fields.SIGLIP_REFUSED, hf_fields.SIGLIP_INERT),
    LlavaOnevisionConfig: (hf_fields.LLAVA_HONOURED, hf_fields.LLAVA_REFUSED, hf_fields.LLAVA_INERT),
}
# Shape fields: the tiny config differs from transformers' default in each (checked below), so
# the plain save/load parity (the "base" case) covers them.
SHAPES = {
    "text_config": ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"),
    "vision_config": ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size"),
}


@pytest.mark.parametrize("cls", list(TABLES), ids=lambda c: c.__name__)
def test_every_transformers_field_is_sorted(cls):
    honoured, refused, inert = TABLES[cls]
    fields = set(cls().to_dict()) | {f.name for f in dataclasses.fields(cls)}
    unsorted = sorted(fields - set(honoured) - set(refused) - set(inert))
    assert not unsorted, f"{cls.__name__} fields neither honoured, refused nor inert: {unsorted}"
    assert not set(honoured) & set(refused) and not set(honoured) & set(inert) and not set(refused) & set(inert)
    assert all(reason.strip() for reason in inert.values())


def test_every_rope_parameter_and_type_is_honoured_and_tested():
    assert set(RopeParameters.__annotations__) <= set(hf_fields.ROPE_HONOURED)
    assert set(ROPE_INIT_FUNCTIONS) | {"default"} == {case[2]["rope_parameters"]["rope_type"] for case in ROPE_CASES}


@pytest.mark.parametrize("ours, theirs", [(TextConfig, hf_fields.QWEN2_HONOURED), (VisionConfig, hf_fields.SIGLIP_HONOURED)])
def test_our_fields_are_exactly_the_honoured_ones(ours, theirs):
    targets = {name for target in theirs.values() for name in target.split(" + ")}
    assert targets == {f.name for f in dataclasses.fields(ours)}


def test_tiny_shapes_differ_from_transformers_defaults():
    tiny, default = tiny_config().to_hf(), LlavaOnevisionConfig()
    for sub, names in SHAPES.items():
        for name in names:
            assert getattr(getattr(tiny, sub), name) != getattr(getattr(default, sub), name), f"{sub}.{name}"


def _hf_config(text=None, vision=None, **top) -> LlavaOnevisionConfig:
    """The tiny config in transformers' form with some fields replaced."""
    data = tiny_config().to_hf().to_dict()
    data["text_config"].pop("layer_types")  # re-derived from the sliding-window fields unless given
    data["text_config"].update(text or {})
    data["vision_config"].update(vision or {})
    data.update(top)
    config = LlavaOnevisionConfig.from_dict(data)
    config._attn_implementation = "sdpa"
    return config


def _logits(model, sample, ids=None):
    with torch.no_grad():
        return model(input_ids=(sample.input_ids if ids is None else ids)[None], **sample.hf_kwargs).logits


# (id, effect, text_config changes, vision_config changes, top-level changes)
# effect: "logits" (the default value gives other logits), "rope" (plain RoPE with the same
# rope_theta gives other logits), "tokens" (another token count), "ids", "tied".
ROPE_CASES = [
    ("rope_theta", "logits", {"rope_parameters": {"rope_type": "default", "rope_theta": 10.0}}),
    ("rope_linear", "rope", {"rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6}}),
    ("rope_dynamic+max_position_embeddings", "rope", {"max_position_embeddings": 16, "rope_parameters": {"rope_type": "dynamic", "factor": 4.0, "rope_theta": 1e6}}),
    ("rope_yarn", "rope", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512, "beta_fast": 16.0, "rope_theta": 1e6}}),
    ("rope_longrope", "rope", {"max_position_embeddings": 64, "rope_parameters": {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [float(i + 2) for i in range(8)], "original_max_position_embeddings": 16, "rope_theta": 1e6}}),
    ("rope_llama3", "rope", {"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64, "rope_theta": 1e6}}),
    ("rope_proportional", "rope", {"rope_parameters": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 100.0}}),
]
CASES = [(case_id, effect, text, None, {}) for case_id, effect, text in ROPE_CASES] + [
    ("base", None, None, None, {}),
    ("text_hidden_act", "logits", {"hidden_act": "gelu"}, None, {}),
    ("rms_norm_eps", "logits", {"rms_norm_eps": 0.5}, None, {}),
    ("use_sliding_window+sliding_window+max_window_layers", "logits", {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1}, None, {}),
    ("layer_types", "logits", {"use_sliding_window": True, "sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"]}, None, {}),
    ("vision_hidden_act", "logits", None, {"hidden_act": "relu"}, {}),
    ("layer_norm_eps", "logits", None, {"layer_norm_eps": 0.5}, {}),
    ("vision_use_head (inert)", None, None, {"vision_use_head": True}, {}),
    ("projector_hidden_act", "logits", None, None, {"projector_hidden_act": "relu"}),
    ("vision_feature_layer", "logits", None, None, {"vision_feature_layer": -2}),
    ("vision_feature_layer_list", "width", None, None, {"vision_feature_layer": [-1, 0]}),
    ("image_grid_pinpoints", "tokens", None, None, {"image_grid_pinpoints": [[32, 32], [32, 64], [64, 32]]}),
    ("vision_aspect_ratio", "tokens", None, None, {"vision_aspect_ratio": "anyres_max_1"}),
    ("image_token_index+video_token_index", "ids", None, None, {"image_token_index": 120, "video_token_index": 121}),
    ("tie_word_embeddings", "tied", {"tie_word_embeddings": True}, None, {}),
]


@pytest.mark.parametrize("case_id, effect, text, vision, top", CASES, ids=[c[0] for c in CASES])
def test_honoured_field_gives_transformers_logits(tmp_path, case_id, effect, text, vision, top):
    hf_config = _hf_config(text, vision, **top)
    torch.manual_seed(0)
    theirs = LlavaOnevisionForConditionalGeneration(hf_config).eval()
    theirs.save_pretrained(tmp_path)
    ours = load_hf(tmp_path, progress=False).eval()
    assert ours.config.visual.pinpoints() == [tuple(p) for p in hf_config.image_grid_pinpoints]
    sample = Sample(ours.config, images=[random_image(96, 64)])
    expected = _logits(theirs, sample)
    with torch.no_grad():
        mine = ours(sample.input_ids[None], visual=sample.visual).logits
    assert (expected - mine).abs().max().item() <= TOL
    default = tiny_config()
    if effect in ("logits", "rope"):
        plain_text = {**text, "rope_parameters": {"rope_type": "default", "rope_theta": text["rope_parameters"]["rope_theta"]}} if effect == "rope" else None
        plain = LlavaOnevisionForConditionalGeneration(_hf_config(plain_text)).eval()
        plain.load_state_dict(theirs.state_dict())
        assert (_logits(plain, sample) - expected).abs().max().item() > 1e-3, f"{case_id} does not change logits here"
    elif effect == "tokens":
        assert sample.plan.total != Sample(default, images=[random_image(96, 64)]).plan.total
    elif effect == "ids":
        assert (ours.config.image_token_id, ours.config.video_token_id) == (120, 121) != (default.image_token_id, default.video_token_id)
    elif effect == "width":  # two layers concatenated on channels
        assert ours.projector.linear_1.in_features == 2 * ours.config.vision.hidden_size
    elif effect == "tied":
        assert ours.language_model.lm_head.weight is ours.language_model.model.embed_tokens.weight


def test_video_logits_with_honoured_fields(tmp_path):
    hf_config = _hf_config({"hidden_act": "gelu", "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}, {"hidden_act": "relu"})
    torch.manual_seed(1)
    theirs = LlavaOnevisionForConditionalGeneration(hf_config).eval()
    theirs.save_pretrained(tmp_path)
    ours = load_hf(tmp_path, progress=False).eval()
    sample = Sample(ours.config, video=random_frames(3))
    with torch.no_grad():
        mine = ours(sample.input_ids[None], visual=sample.visual).logits
    assert (_logits(theirs, sample) - mine).abs().max().item() <= TOL


def test_training_only_fields_reach_the_modules(tmp_path):
    hf_config = _hf_config({"attention_dropout": 0.5, "pad_token_id": 3}, {"attention_dropout": 0.25})
    LlavaOnevisionForConditionalGeneration(hf_config).save_pretrained(tmp_path)
    ours = load_hf(tmp_path, progress=False)
    assert ours.language_model.config.attention_dropout == 0.5
    assert ours.vision_tower.vision_model.config.attention_dropout == 0.25
    assert ours.language_model.model.embed_tokens.padding_idx == 3
    sample = Sample(ours.config, images=[random_image(40, 40)])
    ours.train()
    with torch.no_grad():
        first, second = (ours(sample.input_ids[None], visual=sample.visual).logits for _ in range(2))
    assert not torch.equal(first, second)  # attention dropout is active while training


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    LlavaOnevisionForConditionalGeneration(_hf_config()).save_pretrained(folder)
    return folder


REFUSED = [
    ("vision_feature_select_strategy", None, "default"),
    ("vision_feature_layer", None, []),
    ("multimodal_projector_bias", None, False),
    ("vision_aspect_ratio", None, "pad"),
    ("quantization_config", None, {"quant_method": "bitsandbytes"}),
    ("num_channels", "vision_config", 1),
    ("image_size", "vision_config", [32, 48]),
    ("head_dim", "text_config", 32),
]


@pytest.mark.parametrize("field, sub, value", REFUSED, ids=[f"{s or 'top'}.{f}" for f, s, _ in REFUSED])
def test_refused_field_is_named(tmp_path, saved, field, sub, value):
    shutil.copy(saved / "config.json", tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    (data[sub] if sub else data)[field] = value
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=rf"{field}"):
        read_hf_config(tmp_path)


def test_unknown_keys_are_named_in_a_warning(tmp_path, saved, caplog):
    shutil.copy(saved / "config.json", tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    data["text_config"]["shiny_new_field"] = 1
    data["use_image_newline_parameter"] = True  # a known transformers 4.x key: no warning
    (tmp_path / "config.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        read_hf_config(tmp_path)
    assert "shiny_new_field" in caplog.text and "use_image_newline_parameter" not in caplog.text


def test_component_readers_keep_the_same_fields():
    qwen2 = Qwen2Config(**{**dataclasses.asdict(tiny_config().text), "hidden_act": "gelu", "use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1})
    text = text_config_from_qwen2(qwen2)
    assert (text.hidden_act, text.sliding_window, text.max_window_layers) == ("gelu", 8, 1)
    vision = read_vision_config({"model_type": "siglip_vision_model", "hidden_act": "relu", "attention_dropout": 0.1}, "x.json")
    assert (vision.hidden_act, vision.attention_dropout) == ("relu", 0.1)
    with pytest.raises(CheckpointError, match="x.json: num_channels=4"):
        read_vision_config({"model_type": "siglip_vision_model", "num_channels": 4}, "x.json")
