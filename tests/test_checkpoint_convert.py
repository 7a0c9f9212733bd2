"""`onevision convert`: round trips between layouts, dtype casts, components, clear errors."""

from __future__ import annotations

import dataclasses
import json
import struct

import pytest
import torch
from helpers_model import tiny_config
from llava_next_folders import truncating
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

from onevision.checkpoint import CheckpointError, convert, detect_format, load_hf, read_config, save_hf
from onevision.cli.main import main
from onevision.model.onevision import OneVisionModel, qwen2_config
from onevision.tokenizer import train_small_tokenizer


# Offline: HF_HUB_OFFLINE=1 and any socket connection fails (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("offline")


def _cli(*argv: str) -> int:
    return main(["convert", *argv])


def _data_bytes(path) -> int:
    """Bytes of tensor data in a safetensors file (its size less the 8-byte length and the JSON header)."""
    with open(path, "rb") as file:
        header = struct.unpack("<Q", file.read(8))[0]
    return path.stat().st_size - 8 - header


def _tensors(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_round_trip_hf_llava_next_hf_is_identical(tmp_path, capsys):
    # LLaVA-NeXT only truncates the unpadded side, transformers only rounds: the hf folders carry
    # the truncation for onevision alone (strict=False), and a strict conversion refuses it.
    model = OneVisionModel(truncating(tiny_config()))
    save_hf(model, tmp_path / "hf", progress=False, strict=False)
    assert _cli(str(tmp_path / "hf"), str(tmp_path / "next"), "--to", "llava-next") == 0
    assert detect_format(tmp_path / "next") == "llava-next"
    assert "(hf) -> " in capsys.readouterr().out
    assert "model.mm_projector.0.weight" in _tensors(tmp_path / "next")
    with pytest.raises(CheckpointError, match="visual.unpad_rounding='truncate'"):
        convert(tmp_path / "next", tmp_path / "strict", to="hf", progress=False)
    capsys.readouterr()
    assert _cli(str(tmp_path / "next"), str(tmp_path / "strict"), "--to", "hf") != 0
    assert "unpad_rounding" in capsys.readouterr().err
    assert _cli(str(tmp_path / "next"), str(tmp_path / "back"), "--to", "hf", "--allow-unexpressible") == 0
    first, back = _tensors(tmp_path / "hf"), _tensors(tmp_path / "back")
    assert first.keys() == back.keys()
    assert all(torch.equal(first[k], back[k]) for k in first)
    assert read_config(tmp_path / "back") == model.config


def test_bf16_conversion_halves_the_file(tmp_path):
    save_hf(OneVisionModel(tiny_config()), tmp_path / "fp32", progress=False)
    assert _cli(str(tmp_path / "fp32"), str(tmp_path / "bf16"), "--to", "hf", "--dtype", "bf16") == 0
    full, half = (_data_bytes(tmp_path / name / "model.safetensors") for name in ("fp32", "bf16"))
    assert 2 * half == full
    assert (tmp_path / "bf16" / "model.safetensors").stat().st_size < 0.52 * (tmp_path / "fp32" / "model.safetensors").stat().st_size
    assert {t.dtype for t in _tensors(tmp_path / "bf16").values()} == {torch.bfloat16}
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    loaded = load_hf(tmp_path / "bf16", progress=False)
    assert loaded.language_model.lm_head.weight.dtype == torch.bfloat16


def test_sharded_conversion(tmp_path):
    model = OneVisionModel(truncating(tiny_config()))
    save_hf(model, tmp_path / "hf", progress=False, strict=False)
    assert _cli(str(tmp_path / "hf"), str(tmp_path / "next"), "--to", "llava-next", "--max-shard-size", "100KB") == 0
    assert len(list((tmp_path / "next").glob("model-*-of-*.safetensors"))) > 1
    convert(tmp_path / "next", tmp_path / "back", to="hf", progress=False, strict=False)
    loaded = load_hf(tmp_path / "back", progress=False).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_components_to_hf(tmp_path):
    vision = dataclasses.replace(tiny_config().vision, num_hidden_layers=3)
    SiglipVisionModel(SiglipVisionConfig(**dataclasses.asdict(vision))).save_pretrained(tmp_path / "siglip")
    llm = Qwen2ForCausalLM(qwen2_config(tiny_config().text))
    llm.save_pretrained(tmp_path / "llm")
    train_small_tokenizer(["a cat on a mat"] * 20, vocab_size=300, save_dir=tmp_path / "tokenizer")
    argv = ["--llm", str(tmp_path / "llm"), "--vision", str(tmp_path / "siglip"), str(tmp_path / "out"), "--to", "hf"]
    assert _cli(*argv, "--vision-feature-layer", "-2", "--tokenizer", str(tmp_path / "tokenizer")) == 0
    model = load_hf(tmp_path / "out", progress=False)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert model.config.vision.num_hidden_layers == 2 and model.config.text.vocab_size == len(tokenizer)
    assert model.config.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    assert torch.equal(model.language_model.model.layers[1].mlp.up_proj.weight, llm.model.layers[1].mlp.up_proj.weight)


def test_unknown_formats_name_the_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _cli(str(tmp_path / "empty"), str(tmp_path / "out"), "--to", "hf") == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "empty") in error and "config.json" in error and "llava_onevision" in error
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "mistral"}))
    with pytest.raises(CheckpointError, match=r"model_type 'mistral' is not a known checkpoint format; looked for 'llava_onevision'"):
        detect_format(tmp_path / "other")
    Qwen2ForCausalLM(qwen2_config(tiny_config().text)).save_pretrained(tmp_path / "llm")
    with pytest.raises(CheckpointError, match="single component"):
        detect_format(tmp_path / "llm")
    assert _cli(str(tmp_path / "llm"), "--to", "hf") == 2


def test_missing_and_unexpected_keys_are_listed(tmp_path, capsys):
    save_hf(OneVisionModel(tiny_config()), tmp_path / "hf", progress=False)
    state = _tensors(tmp_path / "hf")
    del state["language_model.model.norm.weight"]
    state["language_model.model.layers.7.mlp.up_proj.weight"] = torch.zeros(2, 2)
    save_file(state, str(tmp_path / "hf" / "model.safetensors"))
    assert _cli(str(tmp_path / "hf"), str(tmp_path / "next"), "--to", "llava-next") == 2
    error = capsys.readouterr().err
    assert "missing keys (1): ['language_model.model.norm.weight']" in error
    assert "unexpected keys (1): ['language_model.model.layers.7.mlp.up_proj.weight']" in error
    assert not (tmp_path / "next").exists()
    with pytest.raises(CheckpointError, match="is a source folder"):
        convert(tmp_path / "hf", tmp_path / "hf", to="llava-next", progress=False)
