"""Packing and collation: bin packing, packed row layout, padded batches, and the packed loss
equal to the per-sample losses on the debug model (SDPA on CPU; varlen flash on CUDA)."""

import dataclasses
import random

import pytest
import torch
import torch.nn.functional as F

from onevision.budget import ImageMedia, VideoMedia, plan_sample
from onevision.data.collate import CollateConfig, Collator
from onevision.data.dataset import Sample, Skipped
from onevision.data.packing import best_fit_decreasing, efficiency, layout_rows, unpack
from onevision.model.config import preset
from onevision.model.onevision import OneVisionModel

PAD = 0


def make_sample(name, length, plans=(), modality="text", vocab=500, image_id=510, video_id=511, side=64, seed=0):
    """A sample of `length` tokens: its placeholder runs after a short prompt, random text, labels on the answer half."""
    gen = torch.Generator().manual_seed(seed)
    runs = [torch.full((p.tokens,), video_id if p.kind == "video" else image_id) for p in plans]
    visual = sum(p.tokens for p in plans)
    text = length - visual
    assert text >= 4
    prompt = torch.randint(1, vocab, (2,), generator=gen)
    rest = torch.randint(1, vocab, (text - 2,), generator=gen)
    ids = torch.cat([prompt, *runs, rest])
    labels = torch.full_like(ids, -100)
    answer = len(ids) - len(rest) // 2
    labels[answer:] = ids[answer:]
    tiles = sum(p.num_tiles for p in plans)
    pixels = torch.randn(tiles, 3, side, side, generator=gen) if plans else None
    return Sample(name, ids, labels, pixels, list(plans), modality, len(ids), source="mem.json", record=f"mem.json[{name}]")


def test_best_fit_decreasing_fits_everything_once():
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(500)]
    bins = best_fit_decreasing(lengths, 128)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 128 for b in bins)
    assert efficiency(lengths, bins, 128) > 0.95
    with pytest.raises(ValueError, match="over the bin capacity"):
        best_fit_decreasing([10, 200], 128)


def test_layout_positions_restart_and_cu_seqlens():
    rows = [[([1, 2, 3], [-100, 2, 3]), ([4, 5], [-100, 5])], [([6, 7, 8, 9, 10, 11], [-100] * 6)]]
    laid = layout_rows(rows, pad_token_id=PAD, pad_to_multiple_of=4)
    assert laid.input_ids.shape == (2, 8)
    assert laid.position_ids.tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], [0, 1, 2, 3, 4, 5, 0, 1]]
    assert laid.cu_seqlens.dtype == torch.int32
    assert laid.cu_seqlens.tolist() == [0, 3, 5, 8, 14, 16]
    assert laid.max_seqlen == 6
    assert laid.spans == ((0, 0, 3), (0, 3, 2), (1, 0, 6))
    assert laid.labels[0, 5:].tolist() == [-100] * 3 and laid.input_ids[0, 5:].tolist() == [PAD] * 3


def test_collator_packs_without_splitting_and_unpacks_to_the_originals():
    rng = random.Random(1)
    samples = [make_sample(f"s{i}", rng.randint(5, 60), seed=i) for i in range(30)]
    batch = Collator(PAD, CollateConfig(pack=True, max_tokens=100))(samples)
    assert batch.attention_mask is None and batch.packed
    assert sorted(batch.ids) == sorted(s.id for s in samples)
    by_id = {s.id: s for s in samples}
    for (ids, labels), name, (row, start, length) in zip(unpack(batch.input_ids, batch.labels, batch.spans), batch.ids, batch.spans):
        original = by_id[name]
        assert ids == original.input_ids.tolist()
        assert labels == [-100] + original.labels.tolist()[1:]
        assert batch.position_ids[row, start : start + length].tolist() == list(range(length))
        assert start + length <= 100
    flat = batch.position_ids.reshape(-1)
    starts = (flat == 0).nonzero().squeeze(1).tolist() + [flat.numel()]
    assert batch.cu_seqlens.tolist() == starts
    assert batch.num_tokens == sum(s.num_tokens for s in samples)


def test_collator_skips_markers_and_oversize_samples_and_counts_them():
    marker = Skipped("bad", "x.jpg", "x.jpg: file does not exist", "media")
    batch = Collator(PAD, CollateConfig(pack=True, max_tokens=50))([make_sample("a", 20), marker, make_sample("big", 80), None])
    assert batch.ids == ["a"]
    assert batch.skip_counts() == {"media": 1, "too_long": 1}
    assert "80 tokens, over max_tokens 50" in batch.skipped[1].reason
    empty = Collator(PAD, CollateConfig(pack=True, max_tokens=50))([marker])
    assert empty.num_samples == 0 and empty.skip_counts() == {"media": 1}


def test_padded_collation_right_pads_and_masks():
    config = preset("debug")
    plan = plan_sample([ImageMedia(100, 60)], config.visual)
    a, b = make_sample("a", 10), make_sample("img", plan.total + 12, plan.items, "image")
    batch = Collator(PAD, CollateConfig(pad_to_multiple_of=8))([a, b])
    width = batch.input_ids.shape[1]
    assert width % 8 == 0 and width >= plan.total + 12
    assert batch.attention_mask[0].tolist() == [1] * 10 + [0] * (width - 10)
    assert batch.labels[0, 10:].eq(-100).all() and batch.input_ids[0, 10:].eq(PAD).all()
    assert batch.cu_seqlens is None and batch.max_seqlen == plan.total + 12
    assert batch.visual.plans == list(plan.items)


def mixed_samples(config):
    """Single image, multi-image, video and text-only samples of the debug model."""
    visual = config.visual
    single = plan_sample([ImageMedia(100, 60)], visual)
    multi = plan_sample([ImageMedia(40, 64), ImageMedia(64, 64)], visual)
    video = plan_sample([VideoMedia(3)], visual)
    return [
        make_sample("image", single.total + 20, single.items, "image", seed=1),
        make_sample("text", 30, (), "text", seed=2),
        make_sample("video", video.total + 16, video.items, "video", seed=3),
        make_sample("multi", multi.total + 14, multi.items, "multi_image", seed=4),
        make_sample("text2", 9, (), "text", seed=5),
    ]


def summed_loss(logits, labels):
    """Sum (not mean) of next-token cross-entropies over supervised positions."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")


@pytest.mark.parametrize("max_tokens", [2048, 420])
def test_packed_loss_equals_sum_of_per_sample_losses(max_tokens):
    config = preset("debug")
    torch.manual_seed(0)
    model = OneVisionModel(config).eval()
    samples = mixed_samples(config)
    packed = Collator(PAD, CollateConfig(pack=True, max_tokens=max_tokens))(samples)
    assert packed.num_samples == len(samples)
    if max_tokens == 420:
        assert packed.input_ids.shape[0] > 1
    with torch.no_grad():
        out = model(packed.input_ids, visual=packed.visual, attention_mask=None, position_ids=packed.position_ids, use_cache=False)
        total = summed_loss(out.logits, packed.labels)
        separate = 0.0
        for sample in samples:
            one = Collator(PAD)([sample])
            logits = model(one.input_ids, visual=one.visual, use_cache=False).logits
            separate = separate + summed_loss(logits, one.labels)
    assert torch.allclose(total, separate, rtol=1e-5, atol=1e-4), (total.item(), separate.item())


@pytest.mark.gpu
def test_cu_seqlens_drive_varlen_flash_attention_like_separate_samples():
    from torch.nn.attention.varlen import varlen_attn

    rng = random.Random(2)
    samples = [make_sample(f"s{i}", rng.randint(5, 90), seed=i) for i in range(12)]
    batch = Collator(PAD, CollateConfig(pack=True, max_tokens=256, pad_to_multiple_of=64))(samples)
    heads, dim, device = 4, 32, "cuda"
    total = batch.input_ids.numel()
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(total, heads, dim, device=device, dtype=torch.bfloat16, generator=gen) for _ in range(3))
    cu = batch.cu_seqlens.to(device)
    out = varlen_attn(q, k, v, cu, cu, batch.max_seqlen, batch.max_seqlen, window_size=(-1, 0))
    width = batch.input_ids.shape[1]
    for row, start, length in batch.spans:
        lo = row * width + start
        sl = slice(lo, lo + length)
        ref = F.scaled_dot_product_attention(
            q[sl].transpose(0, 1).float(), k[sl].transpose(0, 1).float(), v[sl].transpose(0, 1).float(), is_causal=True
        ).transpose(0, 1)
        assert torch.allclose(out[sl].float(), ref, atol=2e-2, rtol=2e-2)


def test_batch_to_and_model_inputs_roundtrip():
    config = dataclasses.replace(preset("debug"))
    batch = Collator(PAD, CollateConfig(pack=True, max_tokens=4096))(mixed_samples(config))
    moved = batch.to("cpu", dtype=torch.float64)
    assert moved.visual.pixel_values.dtype == torch.float64 and moved.input_ids.dtype == torch.long
    kwargs = batch.model_inputs()
    assert kwargs["attention_mask"] is None and kwargs["use_cache"] is False
    assert sum(p.num_tiles for p in batch.visual.plans) == batch.visual.pixel_values.shape[0]
    assert batch.modality == [{"image": "image", "text": "text", "text2": "text", "video": "video", "multi": "multi_image"}[i] for i in batch.ids]
