"""transformers' llava_onevision layout: what transformers saves loads in ours, and the reverse.

Tiny random models (helpers_model), folders in tmp_path, no network (HF_HUB_OFFLINE=1 and any
socket connection fails).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers_model import Sample, model_pair, random_frames, random_image, tiny_config
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, AutoTokenizer, LlavaOnevisionForConditionalGeneration

from onevision.budget import VisualSettings
from onevision.checkpoint import CheckpointError, load_hf, read_config, save_hf
from onevision.checkpoint.files import empty_model
from onevision.checkpoint.hf import VISUAL_EXPRESSED, VISUAL_FIXED
from onevision.model.onevision import OneVisionModel
from onevision.tokenizer import train_small_tokenizer


# Offline: HF_HUB_OFFLINE=1 and any socket connection fails (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("offline")


def _logits_pair(hf_model, ours, config):
    """Logits of both models on a text-only sample and on a one-image sample."""
    out = []
    for images in ([], [random_image(50, 40)]):
        sample = Sample(config, images=images)
        with torch.no_grad():
            theirs = hf_model(input_ids=sample.input_ids[None], **sample.hf_kwargs).logits
            mine = ours(sample.input_ids[None], visual=sample.visual).logits
        out.append((theirs, mine))
    return out


def test_transformers_save_loads_with_same_logits(tmp_path):
    config = tiny_config()
    hf_model, _ = model_pair(config)
    hf_model.save_pretrained(tmp_path)
    ours = load_hf(tmp_path, progress=False)
    assert ours.config.text == config.text and ours.config.vision == config.vision
    for theirs, mine in _logits_pair(hf_model, ours, config):
        assert (theirs - mine).abs().max().item() <= 1e-4


@pytest.mark.parametrize("layout", ["released", "in_memory", "base_model"])
def test_older_key_layouts_load(tmp_path, layout):
    config = tiny_config()
    hf_model, ours = model_pair(config)
    hf_model.save_pretrained(tmp_path)
    state = hf_model.state_dict()  # in-memory layout: model.vision_tower.*, model.language_model.*, lm_head
    if layout == "released":  # what the llava-hf repos hold (transformers 4.x)
        state = {
            k.replace("model.vision_tower.", "vision_tower.vision_model.")
            .replace("model.language_model.", "language_model.model.")
            .replace("model.multi_modal_projector.", "multi_modal_projector.")
            .replace("model.image_newline", "image_newline")
            .replace("lm_head.", "language_model.lm_head."): v
            for k, v in state.items()
        }
    elif layout == "base_model":  # LlavaOnevisionModel keys without the "model." prefix, head under language_model
        state = {k.removeprefix("model.").replace("lm_head.", "language_model.lm_head."): v for k, v in state.items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    loaded = load_hf(tmp_path, progress=False).state_dict()
    expected = ours.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_our_save_loads_in_transformers(tmp_path):
    config = tiny_config()
    hf_reference, ours = model_pair(config)
    files = save_hf(ours, tmp_path, progress=False)
    assert [f.name for f in files] == ["model.safetensors"]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == ["LlavaOnevisionForConditionalGeneration"]
    assert saved["model_type"] == "llava_onevision"
    assert "multi_modal_projector.linear_1.weight" in load_file(str(tmp_path / "model.safetensors"))
    hf_model, info = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for theirs, mine in _logits_pair(hf_model.eval(), ours, config):
        assert (theirs - mine).abs().max().item() <= 1e-4


def test_tied_embeddings_save_without_head(tmp_path):
    config = tiny_config()
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, tie_word_embeddings=True))
    model = OneVisionModel(config)
    save_hf(model, tmp_path, progress=False)
    assert not any("lm_head" in k for k in load_file(str(tmp_path / "model.safetensors")))
    loaded = load_hf(tmp_path, progress=False)
    assert loaded.language_model.lm_head.weight is loaded.language_model.model.embed_tokens.weight
    assert torch.equal(loaded.language_model.lm_head.weight, model.language_model.lm_head.weight)
    _, info = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_tied_config_with_a_different_head_loads_untied(tmp_path):
    config = tiny_config()
    model = OneVisionModel(config)
    save_hf(model, tmp_path, progress=False)
    data = json.loads((tmp_path / "config.json").read_text())
    data["tie_word_embeddings"] = True
    (tmp_path / "config.json").write_text(json.dumps(data))
    loaded = load_hf(tmp_path, progress=False)
    assert not loaded.config.text.tie_word_embeddings
    assert torch.equal(loaded.language_model.lm_head.weight, model.language_model.lm_head.weight)
    assert not torch.equal(loaded.language_model.lm_head.weight, loaded.language_model.model.embed_tokens.weight)


def test_loading_builds_on_meta_and_casts(tmp_path):
    model = OneVisionModel(tiny_config())
    save_hf(model, tmp_path, progress=False)
    empty = empty_model(model.config)
    assert all(p.device.type == "meta" for p in empty.parameters())
    assert all(b.device.type == "cpu" for b in empty.buffers())
    loaded = load_hf(tmp_path, dtype=torch.float16, progress=False)
    assert {p.dtype for p in loaded.parameters()} == {torch.float16}
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    assert torch.equal(loaded.projector.linear_2.weight, model.projector.linear_2.weight.half())


@pytest.mark.gpu
def test_load_onto_cuda(tmp_path):
    config = tiny_config()
    hf_model, ours = model_pair(config)
    save_hf(ours, tmp_path, progress=False)
    loaded = load_hf(tmp_path, device="cuda", progress=False)
    assert all(t.device.type == "cuda" for t in [*loaded.parameters(), *loaded.buffers()])
    sample = Sample(config, images=[random_image(50, 40)])
    with torch.no_grad():
        mine = loaded(sample.input_ids[None].cuda(), visual=sample.visual).logits.cpu()
        theirs = hf_model(input_ids=sample.input_ids[None], **sample.hf_kwargs).logits
    assert (theirs - mine).abs().max().item() <= 1e-3


def test_sharded_save_loads_both_ways(tmp_path):
    model = OneVisionModel(tiny_config())
    files = save_hf(model, tmp_path, max_shard_size="100KB", progress=False)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert sorted(f.name for f in files) == sorted(shards + ["model.safetensors.index.json"])
    loaded = load_hf(tmp_path, progress=False).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    _, info = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    save_hf(model, tmp_path, progress=False)  # a later unsharded save replaces the shards
    assert sorted(p.name for p in tmp_path.glob("model*")) == ["model.safetensors"]


def test_config_round_trip_keeps_our_visual_settings(tmp_path):
    visual = VisualSettings(
        image_size=32, patch_size=8, anyres_max=4, max_grid=3, video_pool_stride=3, video_newline="row", frames_upbound=12, max_visual_tokens=900
    )
    config = tiny_config(visual=visual, vision_feature_layer=-2)
    with pytest.raises(CheckpointError, match="video_pool_stride=3.*video_newline='row'.*max_visual_tokens=900"):
        save_hf(OneVisionModel(config), tmp_path, progress=False)
    save_hf(OneVisionModel(config), tmp_path, progress=False, strict=False)
    assert read_config(tmp_path) == config


def test_mismatched_weights_name_the_keys(tmp_path):
    model = OneVisionModel(tiny_config())
    save_hf(model, tmp_path, progress=False)
    state = load_file(str(tmp_path / "model.safetensors"))
    del state["image_newline"]
    state["vision_tower.vision_model.extra.weight"] = torch.zeros(2)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): \['image_newline'\].*unexpected keys \(1\)"):
        load_hf(tmp_path, progress=False)


def test_processor_files_open_in_transformers(tmp_path):
    tokenizer = train_small_tokenizer(["a cat on a mat", "two dogs"] * 20, vocab_size=300)
    image_id, video_id = tokenizer.convert_tokens_to_ids(["<image>", "<video>"])
    config = tiny_config(image_token_id=image_id, video_token_id=video_id)
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, vocab_size=len(tokenizer)))
    save_hf(OneVisionModel(config), tmp_path, tokenizer=tokenizer, progress=False)
    image_processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert list(image_processor.image_mean) == [0.5] * 3 and list(image_processor.image_std) == [0.5] * 3
    assert image_processor.size == {"height": 32, "width": 32}
    assert [tuple(p) for p in image_processor.image_grid_pinpoints] == config.visual.pinpoints()
    processor = json.loads((tmp_path / "processor_config.json").read_text())
    assert processor["num_image_tokens"] == 16 and processor["vision_aspect_ratio"] == "anyres_max_4"
    assert AutoTokenizer.from_pretrained(tmp_path).convert_tokens_to_ids("<video>") == video_id
    try:
        import torchvision  # noqa: F401  (transformers' video processor needs it)
    except ImportError:
        return
    from transformers import AutoProcessor

    loaded = AutoProcessor.from_pretrained(tmp_path)
    inputs = loaded(images=random_image(50, 40), text="<image>\nhi", return_tensors="pt")
    assert (inputs["input_ids"] == image_id).sum().item() == Sample(config, images=[random_image(50, 40)]).plan.total


def test_tokenizer_ids_must_match_config(tmp_path):
    tokenizer = train_small_tokenizer(["a cat on a mat"] * 20, vocab_size=300)
    with pytest.raises(CheckpointError, match="differ from the model's image_token_id"):
        save_hf(OneVisionModel(tiny_config()), tmp_path / "out", tokenizer=tokenizer, progress=False)
    assert not (tmp_path / "out").exists()


UNEXPRESSIBLE = [
    ("video_newline", "frame"),
    ("video_newline", "row"),
    ("video_newline", "none"),
    ("video_pool_stride", 3),
    ("video_pool_mode", "average"),
    ("single_image", "base"),
    ("max_visual_tokens", 500),
    ("unpad_rounding", "truncate"),
    ("base_image", "stretch"),
]


def test_every_visual_setting_is_expressed_or_checked_on_export():
    fields = {f.name for f in dataclasses.fields(VisualSettings)}
    assert fields == set(VISUAL_EXPRESSED) | set(VISUAL_FIXED)
    assert not set(VISUAL_EXPRESSED) & set(VISUAL_FIXED)
    assert {f for f, _ in UNEXPRESSIBLE} == set(VISUAL_FIXED)


@pytest.mark.parametrize("field, value", UNEXPRESSIBLE, ids=[f"{f}={v}" for f, v in UNEXPRESSIBLE])
def test_export_refuses_what_transformers_cannot_express(tmp_path, caplog, field, value):
    config = tiny_config(visual=dataclasses.replace(tiny_config().visual, **{field: value}))
    model = OneVisionModel(config)
    with pytest.raises(CheckpointError, match=rf"visual\.{field}={value!r}"):
        save_hf(model, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with caplog.at_level("WARNING"):
        save_hf(model, tmp_path / "out", progress=False, strict=False)
    assert f"visual.{field}" in caplog.text
    assert read_config(tmp_path / "out").visual == config.visual


def test_export_of_non_default_fields_reads_the_same_in_transformers(tmp_path):
    """Fields transformers can express are written so that it computes the same logits."""
    from onevision.model.config import ModelConfig

    base = tiny_config()
    text = dataclasses.replace(
        base.text, hidden_act="gelu", rope_theta=500.0, rope_scaling={"rope_type": "linear", "factor": 2.0},
        use_sliding_window=True, sliding_window=6, max_window_layers=1, rms_norm_eps=1e-3,
    )
    vision = dataclasses.replace(base.vision, hidden_act="relu", layer_norm_eps=1e-3)
    visual = dataclasses.replace(base.visual, anyres_max=2, grid_pinpoints=((32, 32), (32, 64), (64, 64), (64, 96)), frames_upbound=5)
    config = ModelConfig(
        vision=vision, text=text, vision_feature_layer=-2, projector_act="relu",
        image_token_id=base.image_token_id, video_token_id=base.video_token_id, visual=visual,
    )
    torch.manual_seed(0)
    ours = OneVisionModel(config).eval()
    save_hf(ours, tmp_path, progress=False)
    hf_model = LlavaOnevisionForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert read_config(tmp_path) == config
    for sample in (Sample(config, images=[random_image(96, 64)]), Sample(config, video=random_frames(3))):
        with torch.no_grad():
            theirs = hf_model(input_ids=sample.input_ids[None], **sample.hf_kwargs).logits
            mine = ours(sample.input_ids[None], visual=sample.visual).logits
        assert (theirs - mine).abs().max().item() <= 1e-4


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (1, "text_config.num_hidden_layers is 1 but the weights hold 2 decoder layers"),
        (3, "text_config.num_hidden_layers is 3 but the weights hold 2 decoder layers"),
        (10**9, r"text_config.num_hidden_layers=1000000000 is outside 1..1024"),
    ],
)
def test_a_config_deeper_or_shallower_than_its_weights_is_refused_before_building(tmp_path, layers, message):
    save_hf(OneVisionModel(tiny_config()), tmp_path, progress=False)
    data = json.loads((tmp_path / "config.json").read_text())
    data["text_config"]["num_hidden_layers"] = layers
    data["text_config"].pop("layer_types", None)
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=message):
        load_hf(tmp_path, progress=False)
