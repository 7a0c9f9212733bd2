"""Feature layout per plan, placeholder splicing and its errors, and the VisualBatch container."""

import dataclasses

import pytest
import torch

from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from helpers_model import Sample, random_frames, random_image, tiny_config
from onevision.budget import ImageMedia, VideoMedia, plan_sample
from onevision.model.layout import layout_item, layout_items
from onevision.model.onevision import OneVisionModel
from onevision.model.splice import splice_features
from onevision.visual_batch import VisualBatch

D = 8


@pytest.fixture(scope="module")
def config():
    return tiny_config()


@pytest.fixture(scope="module")
def model(config):
    return OneVisionModel(config).eval()


def video_plan(config, frames, **visual):
    settings = dataclasses.replace(config.visual, **visual)
    return plan_sample([VideoMedia(frames)], settings).items[0]


@pytest.mark.parametrize("policy", ["video", "frame", "row", "none"])
def test_video_newline_policies_place_newlines_and_keep_pooled_frames(config, policy):
    plan = video_plan(config, 3, video_newline=policy)
    tiles = torch.randn(3, 16, D)
    newline = torch.full((D,), 7.0)
    out = layout_item(plan, tiles, newline)
    assert out.shape == (plan.tokens, D)
    is_newline = (out == 7.0).all(-1)
    pooled = layout_item(video_plan(config, 3, video_newline="none"), tiles, newline)
    assert torch.equal(out[~is_newline], pooled)
    p = plan.pooled_side
    expected = {
        "video": [p * p * 3],
        "frame": [p * p, 2 * p * p + 1, 3 * p * p + 2],
        "row": [(p + 1) * r + p for r in range(3 * p)],
        "none": [],
    }[policy]
    assert is_newline.nonzero().flatten().tolist() == expected


def test_video_pool_stride_sets_the_pooled_side(config):
    plan = video_plan(config, 2, video_pool_stride=3)
    assert plan.pooled_side == 2
    out = layout_item(plan, torch.randn(2, 16, D), torch.zeros(D))
    assert out.shape == (2 * 4 + 1, D)


def test_anyres_layout_keeps_the_base_view_first_and_a_newline_per_row(config):
    plan = plan_sample([ImageMedia(64, 48)], config.visual).items[0]
    tiles = torch.randn(plan.num_tiles, 16, D)
    out = layout_item(plan, tiles, torch.full((D,), 7.0))
    assert torch.equal(out[:16], tiles[0])
    rows, cols = plan.pooled
    newline_at = (out[16:] == 7.0).all(-1).nonzero().flatten().tolist()
    assert newline_at == [(cols + 1) * r + cols for r in range(rows)]


def test_layout_rejects_tiles_that_disagree_with_the_plan(config):
    plan = plan_sample([ImageMedia(64, 48)], config.visual).items[0]
    with pytest.raises(ValueError, match=rf"expects {plan.num_tiles} tiles, got {plan.num_tiles - 1}"):
        layout_item(plan, torch.randn(plan.num_tiles - 1, 16, D), torch.zeros(D))
    with pytest.raises(ValueError, match="made for 16 patches per tile but the tower gives 25"):
        layout_item(plan, torch.randn(plan.num_tiles, 25, D), torch.zeros(D))
    with pytest.raises(ValueError, match=rf"need {plan.num_tiles} tiles but 2 tiles were encoded"):
        layout_items([plan], torch.randn(2, 16, D), torch.zeros(D))


def test_splice_fills_placeholders_row_major():
    ids = torch.tensor([[1, 9, 9, 2], [9, 3, 8, 8]])
    embeds = torch.zeros(2, 4, 2)
    image = torch.arange(6.0).view(3, 2)
    video = torch.full((2, 2), -1.0)
    out = splice_features(embeds, ids, 9, image, 8, video)
    assert out[0, 1].tolist() == [0, 1] and out[0, 2].tolist() == [2, 3] and out[1, 0].tolist() == [4, 5]
    assert (out[1, 2:] == -1).all() and (out[0, 0] == 0).all()


@pytest.mark.parametrize("extra", [1, -1])
def test_image_placeholder_mismatch_raises_with_both_numbers(config, model, extra):
    sample = Sample(config, [random_image(64, 48)])
    tokens = sample.plan.total
    ids = sample.input_ids
    first = int((ids == config.image_token_id).nonzero()[0])
    ids = torch.cat((ids[:first], torch.full((extra,), config.image_token_id), ids[first:])) if extra > 0 else torch.cat((ids[:first], ids[first + 1 :]))
    message = f"input has {tokens + extra} image placeholder tokens .* but the images produce {tokens} visual tokens"
    with pytest.raises(ValueError, match=message):
        model(ids[None], sample.visual)


def test_video_placeholder_mismatch_raises_with_both_numbers(config, model):
    sample = Sample(config, video=random_frames(2))
    ids = torch.cat((sample.input_ids, torch.tensor([config.video_token_id])))
    with pytest.raises(ValueError, match=f"input has {sample.plan.total + 1} video placeholder tokens .* produce {sample.plan.total} visual"):
        model(ids[None], sample.visual)


def test_placeholders_without_visual_input_raise(config, model):
    ids = torch.tensor([[1, 2, config.image_token_id, 3]])
    with pytest.raises(ValueError, match="input has 1 image placeholder tokens .* produce 0 visual tokens"):
        model(ids)


def test_visual_batch_checks_tiles_and_concatenates_in_order(config):
    a = Sample(config, [random_image(64, 48)]).visual
    b = Sample(config, video=random_frames(2)).visual
    joined = VisualBatch.concat([a, None, b])
    assert joined.plans == a.plans + b.plans
    assert torch.equal(joined.pixel_values, torch.cat((a.pixel_values, b.pixel_values)))
    assert joined.image_tokens == a.plans[0].tokens and joined.video_tokens == b.plans[0].tokens
    assert VisualBatch.concat([None, None]) is None
    half = joined.to(dtype=torch.float16)
    assert half.pixel_values.dtype == torch.float16 and half.plans == joined.plans
    with pytest.raises(ValueError, match=f"holds {a.num_tiles - 1} tiles but the 1 plans need {a.num_tiles}"):
        VisualBatch(a.pixel_values[1:], a.plans)


def test_encode_visual_chunks_tiles_without_changing_features(config, model):
    sample = Sample(config, [random_image(96, 96)], video=random_frames(3))
    with torch.no_grad():
        whole = model.encode_visual(sample.visual)
        chunked = model.encode_visual(sample.visual, tile_chunk=2)
    assert whole[0].shape == (sample.plan.items[0].tokens, config.text.hidden_size)
    assert whole[1].shape == (sample.plan.items[1].tokens, config.text.hidden_size)
    for full, part in zip(whole, chunked):
        torch.testing.assert_close(full, part, rtol=0, atol=1e-5)
