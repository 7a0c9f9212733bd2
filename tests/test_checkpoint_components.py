"""A stage-1 model from a Qwen2 folder and a SigLIP folder: decoder and tower weights equal the sources."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers_model import tiny_config
from transformers import Qwen2ForCausalLM, SiglipConfig, SiglipModel, SiglipVisionConfig, SiglipVisionModel

from onevision.checkpoint import CheckpointError, from_components
from onevision.model.onevision import qwen2_config
from onevision.tokenizer import train_small_tokenizer


# Offline: HF_HUB_OFFLINE=1 and any socket connection fails (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("offline")


def _siglip_vision_config(layers: int) -> SiglipVisionConfig:
    vision = tiny_config().vision
    return SiglipVisionConfig(**dataclasses.asdict(dataclasses.replace(vision, num_hidden_layers=layers)))


def _save_components(tmp_path, *, full_siglip: bool, tie: bool = False):
    """(llm folder, vision folder, Qwen2 model, SigLIP vision state dict without prefix)."""
    text = dataclasses.replace(tiny_config().text, tie_word_embeddings=tie)
    llm = Qwen2ForCausalLM(qwen2_config(text)).eval()
    llm.save_pretrained(tmp_path / "llm")
    if full_siglip:
        config = SiglipConfig(
            vision_config=_siglip_vision_config(3).to_dict(),
            text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 100},
        )
        siglip = SiglipModel(config)
        tower = {k.removeprefix("vision_model."): v for k, v in siglip.state_dict().items() if k.startswith("vision_model.")}
    else:
        siglip = SiglipVisionModel(_siglip_vision_config(3))
        tower = siglip.state_dict()
    siglip.save_pretrained(tmp_path / "siglip")
    return tmp_path / "llm", tmp_path / "siglip", llm, tower


@pytest.mark.parametrize("full_siglip", [False, True])
def test_decoder_and_tower_equal_the_sources(tmp_path, full_siglip):
    llm_dir, vision_dir, llm, tower = _save_components(tmp_path, full_siglip=full_siglip)
    model = from_components(llm_dir, vision_dir, vision_feature_layer=-2, image_token_id=126, video_token_id=127, progress=False)
    assert model.config.vision.num_hidden_layers == 2 and model.config.vision_feature_layer == -1
    assert model.config.text == tiny_config().text
    ours = model.state_dict()
    for key, value in llm.state_dict().items():
        assert torch.equal(ours["language_model." + key], value), key
    kept = {k: v for k, v in tower.items() if not k.startswith(("head.", "encoder.layers.2."))}
    assert {k for k in ours if k.startswith("vision_tower.")} == {"vision_tower.vision_model." + k for k in kept}
    for key, value in kept.items():
        assert torch.equal(ours["vision_tower.vision_model." + key], value), key
    assert model.projector.linear_1.weight.shape == (64, 32) and model.image_newline.shape == (64,)
    assert model.projector.linear_1.weight.std() > 0 and model.image_newline.std() > 0


def test_tokenizer_media_tokens_are_added_and_embeddings_grow(tmp_path):
    llm_dir, vision_dir, llm, _ = _save_components(tmp_path, full_siglip=False, tie=True)
    tokenizer = train_small_tokenizer(["a cat on a mat", "two dogs"] * 20, vocab_size=300, extra_special=())
    assert "<image>" not in tokenizer.get_vocab()
    model = from_components(llm_dir, vision_dir, tokenizer=tokenizer, progress=False)
    image_id, video_id = tokenizer.convert_tokens_to_ids(["<image>", "<video>"])
    assert (model.config.image_token_id, model.config.video_token_id) == (image_id, video_id) == (len(tokenizer) - 2, len(tokenizer) - 1)
    embed = model.language_model.model.embed_tokens.weight
    old = llm.model.embed_tokens.weight
    assert model.config.text.vocab_size == len(tokenizer) == embed.shape[0]
    assert torch.equal(embed[: old.shape[0]], old)
    assert torch.allclose(embed[old.shape[0] :], old.mean(0).expand(len(tokenizer) - old.shape[0], -1))
    assert model.language_model.lm_head.weight is embed


def test_wrong_folders_are_named(tmp_path):
    llm_dir, vision_dir, _, _ = _save_components(tmp_path, full_siglip=False)
    with pytest.raises(CheckpointError, match=r"siglip.*config.json.*is not a Qwen2 or Llama LLM"):
        from_components(vision_dir, vision_dir, progress=False)
    with pytest.raises(CheckpointError, match="vision_feature_layer -4 leaves 0 of the tower's 3 layers"):
        from_components(llm_dir, vision_dir, vision_feature_layer=-4, image_token_id=126, video_token_id=127, progress=False)
