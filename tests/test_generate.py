"""Generation: the KV cache changes nothing, batching changes nothing, seeds reproduce,
and greedy tokens equal transformers' `generate(do_sample=False)` for the same weights."""

import pytest
import torch

from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from helpers_model import Sample, model_pair, random_frames, random_image, tiny_config
from onevision.model.generate import GenerationSettings, generate, generate_batch, left_pad
from onevision.visual_batch import VisualBatch

NEW = 10


@pytest.fixture(scope="module")
def config():
    return tiny_config()


@pytest.fixture(scope="module")
def pair(config):
    return model_pair(config)


@pytest.fixture(scope="module")
def samples(config):
    """Single image (AnyRes, downscaled), two images, a video, and text only: four prompt lengths."""
    return [
        Sample(config, [random_image(95, 33, seed=1)], seed=1),
        Sample(config, [random_image(50, 40, seed=2), random_image(20, 70, seed=3)], seed=2),
        Sample(config, video=random_frames(3, seed=4), seed=3),
        Sample(config, seed=4),
    ]


def test_left_pad_positions_count_from_each_prompt_start():
    ids, mask, positions = left_pad([torch.tensor([5, 6, 7]), torch.tensor([8])], pad_token_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [1, 1, 0]]


@pytest.mark.parametrize("index", [0, 2])
def test_greedy_with_cache_equals_without(pair, samples, index):
    _, model = pair
    sample = samples[index]
    cached = generate(model, sample.input_ids, sample.visual, max_new_tokens=NEW)
    recomputed = generate(model, sample.input_ids, sample.visual, max_new_tokens=NEW, use_cache=False)
    assert cached.shape == (NEW,)
    assert torch.equal(cached, recomputed)


def test_left_padded_batch_equals_one_by_one(pair, samples):
    _, model = pair
    assert len({s.input_ids.numel() for s in samples}) == len(samples)
    alone = [generate(model, s.input_ids, s.visual, max_new_tokens=NEW) for s in samples]
    visual = VisualBatch.concat([s.visual for s in samples])
    batched = generate_batch(model, [s.input_ids for s in samples], visual, max_new_tokens=NEW)
    for one, many in zip(alone, batched):
        assert torch.equal(one, many)


def test_batch_rows_stop_at_their_own_eos(pair, samples):
    _, model = pair
    free = [generate(model, s.input_ids, s.visual, max_new_tokens=NEW) for s in samples]
    eos = int(free[0][2])
    settings = GenerationSettings(max_new_tokens=NEW, eos_token_ids=(eos,))
    alone = [generate(model, s.input_ids, s.visual, settings) for s in samples]
    first = free[0].tolist().index(eos)
    assert alone[0].tolist() == free[0][: first + 1].tolist()
    visual = VisualBatch.concat([s.visual for s in samples])
    batched = generate_batch(model, [s.input_ids for s in samples], visual, settings)
    for one, many in zip(alone, batched):
        assert torch.equal(one, many)


def test_sampling_is_reproducible_with_a_seed(pair, samples):
    _, model = pair
    sample = samples[0]
    settings = GenerationSettings(max_new_tokens=16, do_sample=True, temperature=1.5, top_p=0.95, top_k=50, seed=7)
    first = generate(model, sample.input_ids, sample.visual, settings)
    again = generate(model, sample.input_ids, sample.visual, settings)
    other = generate(model, sample.input_ids, sample.visual, settings, seed=8)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_seeded_sampling_leaves_the_global_generator_alone(pair, samples):
    # Why generate_batch keeps its own loop: transformers' generate samples from torch's global
    # RNG, ours from a generator of its own when a seed is given.
    _, model = pair
    sample = samples[1]
    before = torch.random.get_rng_state()
    generate(model, sample.input_ids, sample.visual, max_new_tokens=8, do_sample=True, seed=5)
    assert torch.equal(before, torch.random.get_rng_state())
    generate(model, sample.input_ids, sample.visual, max_new_tokens=8, do_sample=True)
    assert not torch.equal(before, torch.random.get_rng_state())


def test_sampling_with_top_k_1_is_greedy(pair, samples):
    _, model = pair
    sample = samples[2]
    greedy = generate(model, sample.input_ids, sample.visual, max_new_tokens=NEW)
    sampled = generate(model, sample.input_ids, sample.visual, max_new_tokens=NEW, do_sample=True, top_k=1, seed=3)
    assert torch.equal(greedy, sampled)


def test_pad_token_may_not_be_a_placeholder(config, pair, samples):
    with pytest.raises(ValueError, match="pad_token_id 126 is a visual placeholder"):
        generate(pair[1], samples[3].input_ids, pad_token_id=config.image_token_id)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_greedy_tokens_equal_transformers_generate(pair, samples, index):
    hf, model = pair
    sample = samples[index]
    ids = sample.input_ids[None]
    with torch.no_grad():
        theirs = hf.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            **sample.hf_kwargs,
            do_sample=False,
            max_new_tokens=NEW,
            pad_token_id=0,
            eos_token_id=None,
        )[0, ids.shape[1] :]
    mine = generate(model, sample.input_ids, sample.visual, max_new_tokens=NEW)
    assert theirs.tolist() == mine.tolist()
