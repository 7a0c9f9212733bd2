"""Packed attention back-ends agree with transformers' SDPA packed mask; flash with SDPA on CUDA.

`torch.nn.attention.varlen.varlen_attn` runs on CUDA only, so on CPU its glue (reshapes,
`cu_seq_lens` derived once per forward and passed through transformers' kwargs, grouped-query
heads, causality) is checked with a reference kernel of the same signature in its place. The
per-sample SDPA back-end ('auto' on CPU) runs for real. Both must also handle padded batches
(an attention mask) exactly as SDPA does.
"""

import pytest
import torch
import torch.nn.functional as F

from onevision.model import OneVisionModel, preset
from onevision.train.attention import (
    SEGMENT_SDPA,
    VARLEN_ATTENTION,
    packed_kwargs,
    resolve_attention,
    set_decoder_attention,
)
from onevision.train.loss_module import LossModule


def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False, **_):
    """Per-sample causal SDPA over [T, H, d] packed tensors (what varlen_attn computes)."""
    assert tuple(window_size) == (-1, 0), "the glue must ask for causal attention"
    out = torch.empty_like(q)
    for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
        qs, ks, vs = (x[a:b].transpose(0, 1) for x in (q, k, v))
        out[a:b] = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale, enable_gqa=enable_gqa).transpose(0, 1)
    return out


def packed_batch(vocab: int = 500):
    lengths = [7, 12, 5]
    ids = torch.randint(0, vocab, (1, sum(lengths)))
    positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    labels = ids.clone()
    labels[0, torch.tensor([0, 7, 19])] = -100
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


def padded_batch(vocab: int = 500):
    ids = torch.randint(0, vocab, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 5:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    positions = torch.arange(12).expand(3, 12)
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "attention_mask": mask}


def loss_with(model, attention: str, batch: dict) -> torch.Tensor:
    set_decoder_attention(model.language_model, attention)
    return LossModule(model, packed_kernel=attention != "sdpa")(**batch)[0]


def test_packed_kwargs_from_restarting_positions():
    kwargs = packed_kwargs(torch.tensor([[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]))
    assert kwargs["cu_seq_lens_q"].tolist() == [0, 3, 5, 7, 10] and kwargs["max_length_q"] == 3


def test_resolve_attention_rules():
    assert resolve_attention("auto", "cpu") == SEGMENT_SDPA
    assert resolve_attention("sdpa", "cpu") == "sdpa"
    with pytest.raises(ValueError, match="CUDA only"):
        resolve_attention(VARLEN_ATTENTION, "cpu")
    with pytest.raises(ValueError, match="must be one of"):
        resolve_attention("flash", "cpu")


@pytest.mark.parametrize("batch_of", [packed_batch, padded_batch])
def test_per_sample_sdpa_matches_sdpa(batch_of):
    model = OneVisionModel(preset("debug"))
    batch = batch_of()
    reference = loss_with(model, "sdpa", batch)
    torch.testing.assert_close(loss_with(model, SEGMENT_SDPA, batch), reference, rtol=1e-5, atol=1e-6)
    assert model.language_model.config._attn_implementation == SEGMENT_SDPA


@pytest.mark.parametrize("batch_of", [packed_batch, padded_batch])
def test_varlen_glue_matches_sdpa(monkeypatch, batch_of):
    from torch.nn.attention import varlen

    calls = []

    def counted(*args, **kwargs):
        calls.append(args[3].tolist())
        return reference_varlen(*args, **kwargs)

    monkeypatch.setattr(varlen, "varlen_attn", counted)
    model = OneVisionModel(preset("debug"))
    batch = batch_of()
    reference = loss_with(model, "sdpa", batch)
    torch.testing.assert_close(loss_with(model, VARLEN_ATTENTION, batch), reference, rtol=1e-5, atol=1e-6)
    layers = model.config.text.num_hidden_layers
    if batch_of is packed_batch:
        assert calls == [[0, 7, 19, 24]] * layers
        derived = LossModule(model, packed_kernel=False)(**batch)[0]
        torch.testing.assert_close(derived, reference, rtol=1e-5, atol=1e-6)
        assert calls == [[0, 7, 19, 24]] * (2 * layers)
    else:
        assert calls == []


@pytest.mark.gpu
def test_flash_matches_sdpa_in_bf16_on_cuda():
    torch.manual_seed(0)
    model = OneVisionModel(preset("debug")).cuda()
    batch = {k: v.cuda() for k, v in packed_batch().items()}
    losses = {}
    for name in ("sdpa", resolve_attention("auto", "cuda")):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            losses[name] = loss_with(model, name, batch).float()
    sdpa, flash = losses.values()
    torch.testing.assert_close(flash, sdpa, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("batch_of", [packed_batch, padded_batch])
def test_per_sample_sdpa_keeps_the_sliding_window(batch_of):
    import dataclasses

    config = preset("debug")
    text = dataclasses.replace(config.text, use_sliding_window=True, sliding_window=3, max_window_layers=1)
    model = OneVisionModel(dataclasses.replace(config, text=text))
    batch = batch_of()
    reference = loss_with(model, "sdpa", batch)
    torch.testing.assert_close(loss_with(model, SEGMENT_SDPA, batch), reference, rtol=1e-5, atol=1e-6)
    full = OneVisionModel(config)
    full.load_state_dict(model.state_dict())
    assert (loss_with(full, "sdpa", batch) - reference).abs() > 1e-4  # the window matters here
