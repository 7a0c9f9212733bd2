"""Logits parity with transformers' LlavaOnevisionForConditionalGeneration on tiny random configs.

Both models hold the same weights and read the same pixels (transformers' PIL image
processor, frames resized by hand); our placeholder counts come from the planner and must be
the ones transformers' processor would write, and the logits must agree to 1e-4.
"""

import pytest
import torch

from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from helpers_model import (
    Sample,
    hf_image_processor,
    hf_image_token_count,
    hf_video_token_count,
    model_pair,
    random_frames,
    random_image,
    tiny_config,
)
from onevision.model.onevision import OneVisionModel
from onevision.visual_batch import VisualBatch

TOL = 1e-4

# (width, height): squares, 1 px sides, extreme aspect ratios (down to zero crop rows kept),
# grids from 1x1 to 3x3, and grids of 2x3 or more that trigger the AnyRes-Max-4 downscale.
SIZES = [
    (32, 32), (1, 1), (1, 50), (50, 1), (200, 7), (7, 200), (300, 20), (17, 90),
    (64, 48), (48, 64), (33, 33), (95, 33), (97, 31), (64, 96), (96, 96), (100, 100),
]


@pytest.fixture(scope="module")
def config():
    return tiny_config()


@pytest.fixture(scope="module")
def pair(config):
    return model_pair(config)


def both_logits(pair, sample, input_ids=None):
    hf, ours = pair
    ids = (sample.input_ids if input_ids is None else input_ids)[None]
    with torch.no_grad():
        theirs = hf(input_ids=ids, **sample.hf_kwargs).logits
        mine = ours(ids, sample.visual).logits
    return theirs, mine


def test_sizes_cover_downscale_and_degenerate_maps(config):
    plans = [Sample(config, [random_image(w, h)]).plan.items[0] for w, h in SIZES]
    assert any(p.pooled != p.unpadded for p in plans), "no size triggers the AnyRes-Max downscale"
    assert any(0 in p.unpadded for p in plans), "no size keeps zero crop rows or columns"
    assert {p.grid for p in plans} >= {(1, 1), (1, 3), (3, 1), (2, 2), (3, 3), (2, 3), (3, 2)}


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_single_image_matches_transformers(config, pair, size):
    width, height = size
    sample = Sample(config, [random_image(width, height, seed=width * 1000 + height)], seed=width)
    assert sample.plan.total == hf_image_token_count(config, width, height)
    theirs, mine = both_logits(pair, sample)
    assert (theirs - mine).abs().max().item() <= TOL


@pytest.mark.parametrize("sizes", [[(50, 40), (20, 70)], [(50, 40), (20, 70), (33, 33)]], ids=["2", "3"])
def test_multi_image_matches_transformers(config, pair, sizes):
    images = [random_image(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    sample = Sample(config, images)
    side = config.vision.image_size // config.vision.patch_size
    assert [p.tokens for p in sample.plan.items] == [side * side + 1] * len(sizes)
    theirs, mine = both_logits(pair, sample)
    assert (theirs - mine).abs().max().item() <= TOL


@pytest.mark.parametrize("frames", [1, 4])
def test_video_matches_transformers(config, pair, frames):
    sample = Sample(config, video=random_frames(frames))
    assert sample.plan.total == hf_video_token_count(config, frames)
    theirs, mine = both_logits(pair, sample)
    assert (theirs - mine).abs().max().item() <= TOL


def test_image_and_video_in_one_sample_match_transformers(config, pair):
    sample = Sample(config, [random_image(64, 48)], video=random_frames(3, seed=1))
    theirs, mine = both_logits(pair, sample)
    assert (theirs - mine).abs().max().item() <= TOL


def test_text_only_matches_transformers(config, pair):
    sample = Sample(config)
    assert sample.visual is None
    theirs, mine = both_logits(pair, sample)
    assert (theirs - mine).abs().max().item() <= TOL


def test_batch_of_two_single_images_matches_transformers(config, pair):
    hf, ours = pair
    images = [random_image(64, 48, seed=1), random_image(32, 32, seed=2)]
    samples = [Sample(config, [im], seed=i) for i, im in enumerate(images)]
    length = max(s.input_ids.numel() for s in samples)
    rows = [torch.cat((s.input_ids, torch.full((length - s.input_ids.numel(),), 5))) for s in samples]
    ids = torch.stack(rows)
    assert ids.shape[1] == length
    processed = hf_image_processor(config)(images, return_tensors="pt")
    visual = VisualBatch.concat([s.visual for s in samples])
    with torch.no_grad():
        theirs = hf(input_ids=ids, **processed).logits
        mine = ours(ids, visual).logits
    assert (theirs - mine).abs().max().item() <= TOL


@pytest.mark.parametrize("layer", [-2, 1])
def test_other_feature_layers_match_transformers(layer):
    config = tiny_config(vision_feature_layer=layer)
    pair = model_pair(config)
    sample = Sample(config, [random_image(64, 96)])
    theirs, mine = both_logits(pair, sample)
    assert (theirs - mine).abs().max().item() <= TOL


def test_eager_attention_matches_transformers_sdpa(config, pair):
    hf, _ = pair
    eager = OneVisionModel(config, attn_implementation="eager").eval()
    eager.load_state_dict(pair[1].state_dict())
    sample = Sample(config, [random_image(95, 33)])
    theirs, mine = both_logits((hf, eager), sample)
    assert (theirs - mine).abs().max().item() <= TOL


def test_loss_matches_transformers(config, pair):
    hf, ours = pair
    sample = Sample(config, [random_image(64, 48)])
    ids = sample.input_ids[None]
    labels = ids.clone()
    labels[ids >= config.image_token_id] = -100
    labels[:, :2] = -100
    with torch.no_grad():
        theirs = hf(input_ids=ids, labels=labels, **sample.hf_kwargs).loss
        mine = ours(ids, sample.visual, labels=labels).loss
    assert abs(theirs.item() - mine.item()) <= TOL


def test_pixels_reach_only_later_positions(config, pair):
    _, ours = pair
    sample = Sample(config, [random_image(64, 48)])
    ids = sample.input_ids[None]
    first = int((ids[0] == config.image_token_id).nonzero()[0])
    with torch.no_grad():
        base = ours(ids, sample.visual).logits
        changed = VisualBatch(sample.visual.pixel_values + 0.5, sample.visual.plans)
        moved = ours(ids, changed).logits
    assert torch.equal(base[:, :first], moved[:, :first])
    assert (base[:, first:] - moved[:, first:]).abs().max().item() > 1e-3
