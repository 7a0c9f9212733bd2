"""Component pretraining of the demo (decoder LM, SigLIP tower) and its step cache."""

import json

import pytest
import torch

from onevision.demo.cache import DemoCache, cache_key
from onevision.demo.pretrain_text import (
    TextPretrainConfig,
    pretrain_text,
    text_chats,
    token_rows,
)
from onevision.demo.pretrain_vision import (
    VisionPretrainConfig,
    pretrain_vision,
    sigmoid_loss,
)
from onevision.model.config import TextConfig, VisionConfig
from onevision.tokenizer import train_small_tokenizer
from onevision.world import world_texts


@pytest.fixture(scope="module")
def tokenizer():
    return train_small_tokenizer(world_texts(400, 0) + ["You are a helpful assistant."], vocab_size=400)


def _mean(values):
    return sum(values) / len(values)


def test_decoder_pretraining_reduces_its_loss_and_saves_a_qwen2_folder(tokenizer, tmp_path):
    text = TextConfig(vocab_size=400, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
    config = TextPretrainConfig(sentences=200, chats=200, steps=40, batch_size=8, seq_len=64, lr=3e-3, warmup_steps=4)
    losses = pretrain_text(text, tokenizer, config, tmp_path / "llm", seed=0, progress=False)
    assert len(losses) == 40
    assert _mean(losses[-5:]) < 0.75 * losses[0]
    saved = json.loads((tmp_path / "llm" / "config.json").read_text())
    assert saved["model_type"] == "qwen2"
    assert (tmp_path / "llm" / "tokenizer.json").is_file()


def test_tower_pretraining_reduces_the_sigmoid_loss_and_saves_a_siglip_folder(tokenizer, tmp_path):
    vision = VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          image_size=64, patch_size=8)
    config = VisionPretrainConfig(groups=32, steps=40, batch_size=32, lr=2e-3, warmup_steps=4, embed_dim=32, text_width=32)
    losses = pretrain_vision(vision, tokenizer, config, tmp_path / "tower", seed=0, progress=False)
    assert len(losses) == 40
    assert _mean(losses[-5:]) < 0.8 * _mean(losses[:5])
    saved = json.loads((tmp_path / "tower" / "config.json").read_text())
    assert saved["model_type"] == "siglip_vision_model"
    processor = json.loads((tmp_path / "tower" / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 64, "width": 64}


def test_sigmoid_loss_prefers_matching_pairs_and_counts_equal_captions_as_matches():
    torch.manual_seed(0)
    images = torch.randn(4, 8)
    scale, bias = torch.tensor(2.3), torch.tensor(-3.0)
    diagonal = torch.eye(4, dtype=torch.bool)
    aligned = sigmoid_loss(images, images.clone(), diagonal, scale, bias)
    shuffled = sigmoid_loss(images, images[[1, 2, 3, 0]], diagonal, scale, bias)
    assert aligned < shuffled
    # Images 0 and 1 identical with the same caption: calling the pair a negative costs more.
    twins = torch.cat([images[:1], images[:1], images[2:]])
    matches = diagonal.clone()
    matches[0, 1] = matches[1, 0] = True
    assert sigmoid_loss(twins, twins, matches, scale, bias) < sigmoid_loss(twins, twins, diagonal, scale, bias)


def test_text_chats_answer_from_the_description(tokenizer):
    chats = text_chats(50, seed=3)
    assert chats == text_chats(50, seed=3)
    for chat in chats:
        user, reply = chat[0]["content"], chat[1]["content"]
        assert "Answer with one of:" in user
        assert reply in user.split("Answer with one of:")[1]
    rows = token_rows(["a red circle."] * 40, tokenizer, seq_len=16)
    assert rows.shape[1] == 16 and rows.dtype == torch.long


@pytest.mark.parametrize("config", [TextPretrainConfig, VisionPretrainConfig])
def test_pretraining_schedules_refuse_no_steps_and_negative_warmup(config):
    with pytest.raises(ValueError, match=f"{config.__name__}: need steps >= 1"):
        config(steps=0)
    with pytest.raises(ValueError, match="got 10, -1"):
        config(steps=10, warmup_steps=-1)


def test_cache_reuses_finished_steps_and_rebuilds_changed_ones(tmp_path):
    cache = DemoCache(tmp_path)
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "weights.txt").write_text("w")
        return {"losses": [1.0]}

    first = cache.step("part", {"lr": 1}, build)
    again = cache.step("part", {"lr": 1}, build)
    other = cache.step("part", {"lr": 2}, build)
    assert len(calls) == 2
    assert first.folder == again.folder != other.folder
    assert not first.meta["cached"] and again.meta["cached"]
    assert (again.folder / "weights.txt").read_text() == "w"
    assert cache_key("part", {"lr": 1}) == first.key
    DemoCache(tmp_path, enabled=False).step("part", {"lr": 1}, build)
    assert len(calls) == 3


def test_cache_leaves_nothing_behind_when_a_step_fails(tmp_path):
    cache = DemoCache(tmp_path)

    def broken(folder):
        (folder / "half.txt").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.step("part", {"a": 1}, broken)
    assert not cache.folder("part", cache_key("part", {"a": 1})).exists()
    assert not list(tmp_path.glob(".build-*"))
