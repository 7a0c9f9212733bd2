"""Batch sampler: determinism per (seed, epoch), modality grouping, pack budgets, rank shards, resume."""

import random

import pytest

from onevision.data.batch_sampler import ModalityLengthBatchSampler, SamplerConfig

MODALITIES = ("text", "image", "multi_image", "video")


def dataset(n=403, seed=0):
    rng = random.Random(seed)
    modalities = [rng.choice(MODALITIES) for _ in range(n)]
    lengths = [rng.randint(20, 3000) for _ in range(n)]
    return lengths, modalities


def epoch(sampler, number=0):
    sampler.set_epoch(number)
    return list(sampler)


@pytest.mark.parametrize("config", [SamplerConfig(batch_size=8, seed=3), SamplerConfig(max_tokens=8192, seed=3)])
def test_same_seed_same_batches_other_epoch_other_order(config):
    lengths, modalities = dataset()
    a = epoch(ModalityLengthBatchSampler(lengths, modalities, config))
    b = epoch(ModalityLengthBatchSampler(lengths, modalities, config))
    c = epoch(ModalityLengthBatchSampler(lengths, modalities, config), 1)
    assert a == b
    assert a != c
    assert sorted(i for batch in a for i in batch) == list(range(len(lengths)))


def test_padded_batches_hold_one_modality_and_similar_lengths():
    lengths, modalities = dataset()
    batches = epoch(ModalityLengthBatchSampler(lengths, modalities, SamplerConfig(batch_size=8, window=64)))
    mixed = [b for b in batches if len({modalities[i] for i in b}) > 1]
    assert not mixed
    assert all(len(b) <= 8 for b in batches)
    spread = sorted(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches if len(b) == 8)
    assert spread[len(spread) // 2] < 600  # sorted windows: a batch's lengths sit close together


def test_packed_groups_fit_the_budget_and_pack_tightly():
    lengths, modalities = dataset(2000)
    lengths[5] = 50_000  # over max_tokens: rides along, the collator skips it
    config = SamplerConfig(max_tokens=16384, rows_per_step=1)
    batches = epoch(ModalityLengthBatchSampler(lengths, modalities, config))
    assert all(sum(lengths[i] for i in b if lengths[i] <= 16384) <= 16384 for b in batches)
    assert any(5 in b for b in batches)
    assert all(len({modalities[i] for i in b}) == 1 for b in batches)
    fill = sum(l for l in lengths if l <= 16384) / (len(batches) * 16384)
    assert fill > 0.95


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("mode", ["padded", "packed"])
def test_ranks_get_disjoint_shards_with_equal_steps(drop_last, mode):
    lengths, modalities = dataset()
    config = SamplerConfig(batch_size=4, drop_last=drop_last) if mode == "padded" else SamplerConfig(max_tokens=6000, drop_last=drop_last)
    world = 3
    shards = [epoch(ModalityLengthBatchSampler(lengths, modalities, config, rank=r, world_size=world)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    steps = list(zip(*shards))
    # Every step but a merged leftover one holds one modality on all ranks.
    mixed = [s for s in steps if len({modalities[i] for batch in s for i in batch}) > 1]
    assert len(mixed) <= len(MODALITIES)
    seen = [i for shard in shards for batch in shard for i in batch]
    if drop_last:
        assert len(seen) == len(set(seen))  # strictly disjoint
        assert len(set(seen)) > 0.9 * len(lengths)
    else:
        assert set(seen) == set(range(len(lengths)))  # every sample covered
        single = ModalityLengthBatchSampler(lengths, modalities, config, rank=0, world_size=1)
        repeats = len(seen) - len(lengths)
        largest = max(len(b) for b in epoch(single))
        assert 0 <= repeats <= (world - 1) * largest  # only the padded last step repeats


def test_resume_from_state_dict_continues_the_same_sequence():
    lengths, modalities = dataset()
    config = SamplerConfig(batch_size=8, seed=7)
    full = epoch(ModalityLengthBatchSampler(lengths, modalities, config), 2)
    first = ModalityLengthBatchSampler(lengths, modalities, config)
    first.set_epoch(2)
    iterator = iter(first)
    head = [next(iterator) for _ in range(5)]
    state = first.state_dict()
    assert state["batches_consumed"] == 5 and state["epoch"] == 2
    resumed = ModalityLengthBatchSampler(lengths, modalities, config)
    resumed.load_state_dict(state)
    assert len(resumed) == len(full) - 5
    assert head + list(resumed) == full
    assert list(resumed) == full  # the next pass starts the epoch from the top
    with pytest.raises(ValueError, match="seed 7 on 1 ranks"):
        ModalityLengthBatchSampler(lengths, modalities, SamplerConfig(batch_size=8, seed=8)).load_state_dict(state)


def test_group_by_visual_keeps_text_only_apart_and_none_mixes():
    lengths, modalities = dataset(600)
    visual = epoch(ModalityLengthBatchSampler(lengths, modalities, SamplerConfig(max_tokens=8192, group_by="visual")))
    kinds = [{modalities[i] == "text" for i in b} for b in visual]
    assert all(len(k) == 1 for k in kinds)
    assert any(len({modalities[i] for i in b}) > 1 for b in visual)  # image, multi-image and video share rows
    with pytest.raises(ValueError, match="group_by"):
        SamplerConfig(group_by="size")
