"""Building the model: meta-device presets, state-dict layout, loss, packed rows, checkpointing."""

import pytest
import torch
from transformers import LlavaOnevisionForConditionalGeneration

from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from helpers_model import Sample, random_frames, random_image, tiny_config
from onevision.model.config import preset
from onevision.model.onevision import OneVisionModel, shifted_cross_entropy
from onevision.visual_batch import VisualBatch


@pytest.fixture(scope="module")
def config():
    return tiny_config()


@pytest.fixture(scope="module")
def model(config):
    return OneVisionModel(config).eval()


@pytest.mark.parametrize("name", ["0.5b", "7b", "72b"])
def test_meta_presets_allocate_nothing_and_count_like_transformers(name):
    config = preset(name)
    ours = OneVisionModel.from_config(config, device="meta")
    assert all(t.is_meta for t in [*ours.parameters(), *ours.buffers()])
    with torch.device("meta"):
        theirs = LlavaOnevisionForConditionalGeneration(config.to_hf())
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
    assert ours.num_parameters() > {"0.5b": 0.8e9, "7b": 7e9, "72b": 70e9}[name]


def test_tied_embeddings_count_once():
    tied = preset("0.5b")
    assert tied.text.tie_word_embeddings, "Qwen2-0.5B ties its embedding and LM head"
    config = preset("0.5b", text=type(tied.text)(**{**tied.text.__dict__, "tie_word_embeddings": False}))
    untied = OneVisionModel.from_config(config, device="meta").num_parameters()
    with torch.device("meta"):
        theirs = LlavaOnevisionForConditionalGeneration(tied.to_hf())
    ours = OneVisionModel.from_config(tied, device="meta")
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
    assert untied - ours.num_parameters() == config.text.vocab_size * config.text.hidden_size


def test_state_dict_keys_follow_the_contract(model, config):
    keys = set(model.state_dict())
    prefixes = ("vision_tower.vision_model.", "projector.", "language_model.model.")
    assert {k for k in keys if not k.startswith(prefixes)} == {"image_newline", "language_model.lm_head.weight"}
    assert {k for k in keys if k.startswith("projector.")} == {
        f"projector.linear_{i}.{p}" for i in (1, 2) for p in ("weight", "bias")
    }
    assert "vision_tower.vision_model.encoder.layers.1.mlp.fc2.weight" in keys
    assert "vision_tower.vision_model.post_layernorm.weight" in keys
    assert "language_model.model.embed_tokens.weight" in keys
    assert model.image_newline.shape == (config.text.hidden_size,)


def test_bad_settings_raise(config):
    with pytest.raises(ValueError, match="vision_feature_layer -4 is outside"):
        OneVisionModel(tiny_config(vision_feature_layer=-4))
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        OneVisionModel(config, attn_implementation="fast")


def test_hidden_states_feed_the_lm_head(model, config):
    sample = Sample(config, [random_image(64, 48)])
    ids = sample.input_ids[None]
    with torch.no_grad():
        hidden = model.hidden_states(ids, sample.visual)
        logits = model(ids, sample.visual).logits
    assert hidden.shape == (1, ids.shape[1], config.text.hidden_size)
    torch.testing.assert_close(model.language_model.lm_head(hidden), logits, rtol=0, atol=0)


def test_loss_is_shifted_cross_entropy_and_zero_without_targets():
    logits = torch.randn(2, 5, 11, requires_grad=True)
    labels = torch.tensor([[-100, 3, 4, -100, 7], [-100, -100, 1, 2, -100]])
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(shifted_cross_entropy(logits, labels), expected)
    empty = shifted_cross_entropy(logits, torch.full_like(labels, -100))
    assert empty.item() == 0.0
    empty.backward()
    assert logits.grad is not None and (logits.grad == 0).all()


def test_packed_row_equals_separate_samples(model, config):
    """Two samples in one row: position_ids restart, no attention mask, no cache."""
    samples = [Sample(config, [random_image(64, 48)], seed=1), Sample(config, video=random_frames(2), seed=2)]
    ids = torch.cat([s.input_ids for s in samples])[None]
    positions = torch.cat([torch.arange(s.input_ids.numel()) for s in samples])[None]
    with torch.no_grad():
        packed = model(ids, VisualBatch.concat([s.visual for s in samples]), position_ids=positions).logits[0]
        alone = [model(s.input_ids[None], s.visual).logits[0] for s in samples]
    torch.testing.assert_close(packed, torch.cat(alone), rtol=0, atol=1e-5)


def test_gradient_checkpointing_keeps_gradients(config):
    sample = Sample(config, [random_image(64, 48)])
    ids = sample.input_ids[None]
    labels = ids.masked_fill(ids >= config.image_token_id, -100)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = OneVisionModel(config).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.is_gradient_checkpointing
            assert all(layer.gradient_checkpointing for layer in model.vision_tower.vision_model.encoder.layers)
            assert all(layer.gradient_checkpointing for layer in model.language_model.model.layers)
        model(ids, sample.visual, labels=labels).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    assert grads[0].keys() == grads[1].keys()
    assert "vision_tower.vision_model.encoder.layers.0.self_attn.q_proj.weight" in grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6)


def test_bfloat16_model_runs_on_float32_pixels(model, config):
    sample = Sample(config, [random_image(95, 33)], video=random_frames(2))
    half = OneVisionModel(config)
    half.load_state_dict(model.state_dict())
    half = half.to(torch.bfloat16).eval()
    with torch.no_grad():
        full = model(sample.input_ids[None], sample.visual).logits
        low = half(sample.input_ids[None], sample.visual).logits
    assert low.dtype == torch.bfloat16
    assert (full - low.float()).abs().max().item() < 0.05
