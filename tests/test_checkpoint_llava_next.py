"""The original LLaVA-NeXT `llava_qwen` layout, built here from its known key and config names.

The checkpoint's SigLIP has 3 layers; LLaVA-NeXT deletes the last at load time and uses the
last remaining hidden state, which is transformers' `vision_feature_layer=-2` over all 3.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers_model import Sample, build_hf, random_image, tiny_config
from llava_next_folders import truncating
from safetensors.torch import save_file
from transformers import SiglipVisionConfig

from onevision.budget import default_grid_pinpoints
from onevision.checkpoint import (
    CheckpointError,
    expand_grid_pinpoints,
    load_llava_next,
    read_llava_next,
    read_llava_next_config,
    save_llava_next,
)
from onevision.model.config import SIGLIP_SO400M
from onevision.model.onevision import OneVisionModel


# Offline: HF_HUB_OFFLINE=1 and any socket connection fails (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("offline")


def _three_layer_config():
    config = tiny_config(vision_feature_layer=-2)
    return dataclasses.replace(config, vision=dataclasses.replace(config.vision, num_hidden_layers=3))


def _llava_next_config(config) -> dict:
    """A llava_qwen config.json as LLaVA-NeXT writes it, plus the tiny tower's vision_config."""
    text = config.text
    return {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava_qwen",
        "vocab_size": text.vocab_size,
        "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "max_position_embeddings": text.max_position_embeddings,
        "rope_theta": text.rope_theta,
        "rms_norm_eps": text.rms_norm_eps,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "vision_config": {**dataclasses.asdict(config.vision), "model_type": "siglip_vision_model"},
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": config.vision.hidden_size,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_patch_merge_type": "spatial_unpad",
        "image_aspect_ratio": "anyres_max_4",
        "image_grid_pinpoints": "(1x1),...,(3x3)",
        "mm_spatial_pool_stride": 2,
        "mm_newline_position": "one_token",
        "frames_upbound": 8,
        "image_token_index": config.image_token_id,
        "video_token_index": config.video_token_id,
        "use_cache": True,
    }


def _llava_next_state(hf_state: dict, keep_last_layer: bool, last_layer: int) -> dict:
    """transformers' in-memory keys renamed to LLaVA-NeXT's; optionally the SigLIP layer it deletes, plus a head."""
    rules = (
        ("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
        ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
        ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
        ("model.image_newline", "model.image_newline"),
        ("model.language_model.", "model."),
        ("lm_head.", "lm_head."),
    )
    out = {}
    for key, value in hf_state.items():
        old, new = next((o, n) for o, n in rules if key.startswith(o))
        name = new + key[len(old) :]
        if keep_last_layer or f"encoder.layers.{last_layer}." not in name:
            out[name] = value.contiguous()
    if keep_last_layer:
        out["model.vision_tower.vision_tower.vision_model.head.probe"] = torch.zeros(1, 1, 32)
        out["model.vision_tower.vision_tower.vision_model.head.attention.in_proj_weight"] = torch.zeros(96, 32)
    return out


@pytest.mark.parametrize("keep_last_layer", [True, False])
def test_llava_next_checkpoint_matches_transformers(tmp_path, keep_last_layer):
    config = _three_layer_config()
    hf_model = build_hf(config)
    (tmp_path / "config.json").write_text(json.dumps(_llava_next_config(config)))
    save_file(_llava_next_state(hf_model.state_dict(), keep_last_layer, last_layer=2), str(tmp_path / "model.safetensors"))

    checkpoint = read_llava_next(tmp_path)
    assert checkpoint.config.vision.num_hidden_layers == 2 and checkpoint.config.vision_feature_layer == -1
    assert any("layers.2." in k for k in checkpoint.dropped) == keep_last_layer
    assert any(".head." in k for k in checkpoint.dropped) == keep_last_layer
    # (width, height) pairs in the original's order; the same set of resolutions as transformers'.
    assert sorted(checkpoint.config.visual.pinpoints()) == sorted(config.visual.pinpoints())
    assert checkpoint.config.visual.anyres_max == 4 and checkpoint.config.visual.frames_upbound == 8

    ours = load_llava_next(tmp_path, progress=False)
    assert len(ours.vision_tower.vision_model.encoder.layers) == 2
    for images in ([], [random_image(50, 40)]):
        sample = Sample(config, images=images)
        with torch.no_grad():
            theirs = hf_model(input_ids=sample.input_ids[None], **sample.hf_kwargs).logits
            mine = ours(sample.input_ids[None], visual=sample.visual).logits
        assert (theirs - mine).abs().max().item() <= 1e-4


def test_unknown_keys_are_reported_with_their_file_names(tmp_path):
    save_llava_next(OneVisionModel(truncating(tiny_config())), tmp_path, progress=False)
    save_file({"model.vision_resampler.weight": torch.zeros(2)}, str(tmp_path / "extra.safetensors"))
    (tmp_path / "model.safetensors").rename(tmp_path / "main.safetensors")  # no index: every file is read
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\)") as error:
        load_llava_next(tmp_path, progress=False)
    assert "['language_model.model.vision_resampler.weight (file key model.vision_resampler.weight)']" in str(error.value)


def test_save_and_load_round_trip(tmp_path):
    model = OneVisionModel(truncating(tiny_config()))
    save_llava_next(model, tmp_path, progress=False)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "llava_qwen" and data["mm_vision_select_layer"] == -2
    assert data["vision_config"]["num_hidden_layers"] == 3  # SigLIP before LLaVA-NeXT deletes one
    loaded = load_llava_next(tmp_path, progress=False)
    assert loaded.config == model.config
    state = model.state_dict()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_feature_layer_other_than_last_cannot_be_saved(tmp_path):
    with pytest.raises(CheckpointError, match="vision_feature_layer -2"):
        save_llava_next(OneVisionModel(truncating(tiny_config(vision_feature_layer=-2))), tmp_path, progress=False)


def test_grid_pinpoints_forms():
    # LLaVA-NeXT's pairs are (width, height), in its order; ours are (height, width).
    assert expand_grid_pinpoints("(1x1),...,(6x6)", 384) == [(h, w) for w, h in default_grid_pinpoints(384, 6)]
    assert expand_grid_pinpoints("(1x1),(1x2),(2x2)", 384) == [(h, w) for w in (384, 768) for h in (384, 768)]
    assert expand_grid_pinpoints("(2x1),...,(3x2)", 10) == [(10, 20), (20, 20), (10, 30), (20, 30)]
    assert expand_grid_pinpoints([[384, 768], [768, 384]], 384) == [(768, 384), (384, 768)]
    assert expand_grid_pinpoints("[(336, 672)]", 336) == [(672, 336)]
    with pytest.raises(CheckpointError, match="no '\\(AxB\\)' grid"):
        expand_grid_pinpoints("(1 x)", 384)


def test_released_config_defaults_to_so400m(tmp_path):
    data = _llava_next_config(tiny_config())
    del data["vision_config"], data["image_token_index"], data["video_token_index"]
    data.update(mm_hidden_size=1152, image_aspect_ratio="anyres_max_9", image_grid_pinpoints="(1x1),...,(6x6)")
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = read_llava_next_config(tmp_path)
    assert config.vision == SIGLIP_SO400M and config.vision_feature_layer == -1
    assert sorted(config.visual.pinpoints()) == default_grid_pinpoints(384, 6)
    assert (config.image_token_id, config.video_token_id) == (151646, 151647)
    data["mm_vision_tower"] = "google/siglip-base-patch16-224"
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="pass vision_dir="):
        read_llava_next_config(tmp_path)
    base = SiglipVisionConfig(hidden_size=1152, intermediate_size=64, num_hidden_layers=5, num_attention_heads=2, image_size=224, patch_size=16)
    base.save_pretrained(tmp_path / "siglip")
    config = read_llava_next_config(tmp_path, vision_dir=tmp_path / "siglip")
    assert (config.vision.num_hidden_layers, config.vision.image_size, config.visual.patch_size) == (4, 224, 16)
    assert config.visual.pinpoints()[-1] == (6 * 224, 6 * 224)


def test_placeholder_ids_past_the_vocabulary_grow_it(tmp_path):
    model = OneVisionModel(truncating(tiny_config()))
    save_llava_next(model, tmp_path, progress=False)
    data = json.loads((tmp_path / "config.json").read_text())
    data["video_token_index"] = data["vocab_size"]  # as released: <video> = 151647 = Qwen2's row count
    (tmp_path / "config.json").write_text(json.dumps(data))
    loaded = load_llava_next(tmp_path, progress=False)
    rows = model.config.text.vocab_size
    assert loaded.config.text.vocab_size == rows + 1
    embed = loaded.language_model.model.embed_tokens.weight
    old = model.language_model.model.embed_tokens.weight
    assert torch.equal(embed[:rows], old) and torch.allclose(embed[rows], old.mean(0))
