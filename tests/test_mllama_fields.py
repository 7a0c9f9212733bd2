"""Every field of transformers' MllamaConfig, MllamaTextConfig and MllamaVisionConfig is honoured,
refused or inert (onevision.model.mllama_config), and the honoured ones act as in transformers.

The fields are enumerated from the installed transformers, so a release that adds one fails
here until it is sorted. A config with every honoured field away from its default is saved by
transformers and loaded through `load_mllama`: each value must reach the transformers config
of the model we build, and the logits must be transformers' (1e-4, fp32). Logit-changing fields
are also flipped one at a time on the same weights, so a dropped field fails.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil

import pytest
import torch
from helpers_mllama import open_gates, our_inputs, random_image, spread_weights
from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaTextConfig, MllamaVisionConfig

from onevision.checkpoint.files import CheckpointError
from onevision.checkpoint.mllama import load_mllama, read_mllama_config
from onevision.model import mllama_config as fields
from onevision.model.mllama_config import PRESETS, MllamaModelConfig, MllamaTextSettings, MllamaVisionSettings

TOL = 1e-4
TABLES = {
    MllamaConfig: (fields.TOP_HONOURED, fields.TOP_REFUSED, fields.TOP_INERT),
    MllamaTextConfig: (fields.TEXT_HONOURED, fields.TEXT_REFUSED, fields.TEXT_INERT),
    MllamaVisionConfig: (fields.VISION_HONOURED, fields.VISION_REFUSED, fields.VISION_INERT),
}

# Every honoured field away from the debug preset's value (itself away from transformers' defaults).
TEXT = dict(
    vocab_size=390, hidden_size=48, hidden_act="gelu", num_hidden_layers=4, num_attention_heads=6, num_key_value_heads=3,
    intermediate_size=40, rms_norm_eps=0.25, max_position_embeddings=256, cross_attention_layers=(0, 2), dropout=0.0,
    rope_parameters={"rope_type": "llama3", "rope_theta": 50.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8},
    bos_token_id=1, eos_token_id=(2, 3), pad_token_id=4,
)
VISION = dict(
    hidden_size=24, hidden_act="relu", num_hidden_layers=3, num_global_layers=2, attention_heads=3, intermediate_size=40,
    vision_output_dim=72, image_size=42, patch_size=7, norm_eps=0.25, max_num_tiles=2, intermediate_layers_indices=(0, 2),
)
CHANGED = MllamaModelConfig(MllamaTextSettings(**TEXT), MllamaVisionSettings(**VISION), image_token_id=390)


@pytest.mark.parametrize("cls", list(TABLES), ids=lambda c: c.__name__)
def test_every_transformers_field_is_sorted(cls):
    honoured, refused, inert = TABLES[cls]
    present = set(cls().to_dict()) | {f.name for f in dataclasses.fields(cls)}
    unsorted = sorted(present - set(honoured) - set(refused) - set(inert))
    assert not unsorted, f"{cls.__name__} fields neither honoured, refused nor inert: {unsorted}"
    assert not set(honoured) & set(refused) and not set(honoured) & set(inert) and not set(refused) & set(inert)
    assert all(reason.strip() for reason in inert.values())
    assert set(fields.VISION_CONSTRAINTS) <= set(fields.VISION_HONOURED)


def test_changed_config_moves_every_honoured_field():
    debug = PRESETS["mllama-debug"]
    for ours, base in ((CHANGED.text, debug.text), (CHANGED.vision, debug.vision)):
        same = [f.name for f in dataclasses.fields(ours) if getattr(ours, f.name) == getattr(base, f.name) and f.name != "dropout"]
        assert not same, same
    assert set(TEXT) == set(fields.TEXT_HONOURED) and set(VISION) | {"supported_aspect_ratios"} == set(fields.VISION_HONOURED)


def _logits(model, ids, inputs):
    with torch.no_grad():
        return model(input_ids=ids, **inputs).logits


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("changed")
    torch.manual_seed(0)
    theirs = MllamaForConditionalGeneration(CHANGED.to_hf()).eval()
    spread_weights(theirs)
    theirs.save_pretrained(folder)
    return folder, theirs


def _sample(config):
    ids = torch.tensor([[1, 5, config.image_token_id, 7, 8, 9, 10]])
    return ids, our_inputs(config, ids, [[random_image(30, 100)]])


def test_honoured_fields_reach_transformers_and_give_its_logits(saved):
    folder, theirs = saved
    ours = load_mllama(folder)
    assert ours.config == CHANGED
    for sub, settings in (("text_config", CHANGED.text), ("vision_config", CHANGED.vision)):
        for name in (f.name for f in dataclasses.fields(settings)):
            value = getattr(getattr(ours.hf.config, sub), name)
            expected = getattr(settings, name)
            assert (list(value) if isinstance(value, (list, tuple)) else value) == (list(expected) if isinstance(expected, tuple) else expected), name
    assert ours.hf.config.image_token_index == 390
    assert ours.model.language_model.embed_tokens.padding_idx == 4
    ids, inputs = _sample(CHANGED)
    assert inputs["pixel_values"].shape[2:] == (2, 3, 42, 42)  # max_num_tiles and image_size reach the planner
    assert (_logits(theirs, ids, inputs) - _logits(ours, ids, inputs)).abs().max().item() <= TOL


# Fields whose default value, on the same weights, must give other logits.
FLIPS = [
    ("text_config", "hidden_act", "silu"),
    ("text_config", "rms_norm_eps", 1e-5),
    ("text_config", "rope_parameters", {"rope_type": "default", "rope_theta": 50.0}),
    ("vision_config", "hidden_act", "gelu"),
    ("vision_config", "norm_eps", 1e-5),
    ("vision_config", "intermediate_layers_indices", [1, 2]),
]


@pytest.mark.parametrize("sub, name, value", FLIPS, ids=[f"{s}.{n}" for s, n, _ in FLIPS])
def test_honoured_field_changes_logits(saved, sub, name, value):
    folder, theirs = saved
    data = theirs.config.to_dict()
    data[sub][name] = value
    flipped = MllamaForConditionalGeneration(MllamaConfig.from_dict(data)).eval()
    flipped.load_state_dict(theirs.state_dict())
    ids, inputs = _sample(CHANGED)
    assert (_logits(flipped, ids, inputs) - _logits(theirs, ids, inputs)).abs().max().item() > 1e-3


def test_dropout_reaches_the_cross_attention(tmp_path):
    data = PRESETS["mllama-debug"].to_hf().to_dict()
    data["text_config"]["dropout"] = 0.5
    MllamaForConditionalGeneration(MllamaConfig.from_dict(data)).save_pretrained(tmp_path)
    ours = load_mllama(tmp_path)
    assert ours.model.language_model.layers[1].cross_attn.dropout == 0.5


REFUSED = [
    ("text_config", "tie_word_embeddings", True),
    ("text_config", "head_dim", 16),
    ("vision_config", "num_channels", 1),
    ("vision_config", "image_size", [28, 42]),
    ("vision_config", "image_size", 40),
    ("vision_config", "patch_size", [7, 7]),
    ("vision_config", "supported_aspect_ratios", [[1, 1], [2, 1], [1, 2], [2, 2], [1, 3], [3, 1], [1, 4], [4, 1]]),
    ("vision_config", "vision_output_dim", 64),
    (None, "quantization_config", {"quant_method": "bitsandbytes"}),
]


@pytest.mark.parametrize("sub, name, value", REFUSED, ids=[f"{s or 'top'}.{n}={v}" for s, n, v in REFUSED])
def test_refused_field_is_named(tmp_path, saved, sub, name, value):
    folder, _ = saved
    data = json.loads((folder / "config.json").read_text())
    (data[sub] if sub else data)[name] = value
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=rf"config.json: {sub + '.' if sub else ''}{name}=.* is not supported"):
        read_mllama_config(tmp_path)


def test_unknown_keys_are_named_and_other_models_refused(tmp_path, saved, caplog):
    folder, _ = saved
    shutil.copy(folder / "config.json", tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    data["vision_config"]["shiny_new_field"] = 1
    (tmp_path / "config.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        read_mllama_config(tmp_path)
    assert "shiny_new_field" in caplog.text and "vision_config" in caplog.text
    data["model_type"] = "llava"
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="model_type='llava', expected 'mllama'"):
        read_mllama_config(tmp_path)


def test_every_image_processor_field_is_sorted():
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    from onevision.checkpoint import mllama as pixels

    sorted_fields = set(pixels.PIXELS_HONOURED) | set(pixels.PIXELS_FIXED) | {"size", "max_image_tiles"} | set(pixels.PIXELS_INERT)
    assert not set(MllamaImageProcessorPil().to_dict()) - sorted_fields
