"""Properties of the visual token planner over thousands of random samples and settings.

- a plan's total is the sum of its items, and its items follow the media in order;
- with a budget, the plan fits it, or `BudgetError` is raised exactly when even the fully
  degraded plan (fewest frames, strongest pooling, smallest N) is over it;
- degradation follows the documented order: frames first, then pooling stride, then N,
  and each step gives up no more than needed;
- the model's feature layout (`onevision.model.layout`) produces exactly `plan.tokens`
  tokens for every item, on random features of a tiny width.
"""

from __future__ import annotations

import dataclasses

import torch
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from onevision.budget import (
    AnyResPlan,
    BaseImagePlan,
    BudgetError,
    ImageMedia,
    VideoMedia,
    VideoPlan,
    VisualSettings,
    plan_sample,
)
from onevision.budget.planner import VIDEO_NEWLINE_POLICIES
from onevision.model.layout import layout_item, layout_items

QUICK = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@st.composite
def visual_settings(draw, budget: bool = True) -> VisualSettings:
    patch = draw(st.integers(1, 16))
    side = draw(st.integers(1, 27))
    return VisualSettings(
        image_size=side * patch + draw(st.integers(0, patch - 1)),
        patch_size=patch,
        anyres_max=draw(st.integers(1, 9)),
        max_grid=draw(st.integers(1, 6)),
        video_pool_stride=draw(st.integers(1, 4)),
        video_newline=draw(st.sampled_from(VIDEO_NEWLINE_POLICIES)),
        frames_upbound=draw(st.integers(1, 64)),
        max_visual_tokens=draw(st.one_of(st.none(), st.integers(1, 20000))) if budget else None,
        min_frames=draw(st.integers(1, 8)),
        max_pool_stride=draw(st.integers(1, 6)),
        min_anyres_max=draw(st.integers(1, 9)),
    )


image_media = st.builds(ImageMedia, width=st.integers(1, 4000), height=st.integers(1, 4000))
video_media = st.builds(VideoMedia, frames=st.integers(1, 200))
sample_media = st.lists(st.one_of(image_media, video_media), min_size=1, max_size=4)


def fully_degraded(media, settings: VisualSettings):
    """The smallest plan degrading may reach, planned without a budget."""
    videos = [m.frames for m in media if isinstance(m, VideoMedia)]
    most = min(max(videos, default=1), settings.frames_upbound)
    return plan_sample(media, _fixed(settings, cap=min(settings.min_frames, most),
                                     stride=max(settings.max_pool_stride, settings.video_pool_stride),
                                     n=min(settings.min_anyres_max, settings.anyres_max)))


def _fixed(settings: VisualSettings, *, cap: int, stride: int, n: int) -> VisualSettings:
    return dataclasses.replace(settings, frames_upbound=cap, video_pool_stride=stride, anyres_max=n, max_visual_tokens=None)


def _levels(plan, settings: VisualSettings) -> tuple[int, int, int]:
    """(frame cap, stride, N) a plan was made with, read from its items."""
    videos = [item for item in plan.items if isinstance(item, VideoPlan)]
    images = [item for item in plan.items if isinstance(item, AnyResPlan)]
    cap = max((v.frames for v in videos), default=settings.frames_upbound)
    stride = videos[0].pool_stride if videos else settings.video_pool_stride
    n = images[0].anyres_max if images else settings.anyres_max
    return cap, stride, n


@hyp_settings(max_examples=2000, **QUICK)
@given(media=sample_media, settings=visual_settings())
def test_totals_budget_and_degradation_order(media, settings):
    budget = settings.max_visual_tokens
    floor = fully_degraded(media, settings).total
    try:
        plan = plan_sample(media, settings)
    except BudgetError as error:
        assert budget is not None and floor > budget, (budget, floor)
        assert str(floor) in str(error) and str(budget) in str(error)
        return
    if budget is not None:
        assert plan.total <= budget and floor <= budget, (plan.total, budget, floor)
    assert plan.total == sum(item.tokens for item in plan.items)
    assert len(plan.items) == len(media)
    single = sum(isinstance(m, ImageMedia) for m in media) == 1
    for m, item in zip(media, plan.items):
        if isinstance(m, VideoMedia):
            assert isinstance(item, VideoPlan) and item.source_frames == m.frames and 1 <= item.frames <= m.frames
        else:
            assert isinstance(item, AnyResPlan if single else BaseImagePlan)
            assert (item.width, item.height) == (m.width, m.height)

    undegraded = plan_sample(media, dataclasses.replace(settings, max_visual_tokens=None))
    if budget is None or undegraded.total <= budget:
        assert plan.degraded == () and plan == dataclasses.replace(undegraded, budget=budget)
        return
    assert plan.total <= budget and plan.degraded
    cap, stride, n = _levels(plan, settings)
    top_cap = _levels(undegraded, settings)[0]
    min_cap = min(settings.min_frames, top_cap)
    max_stride = max(settings.max_pool_stride, settings.video_pool_stride)
    assert min_cap <= cap <= top_cap and settings.video_pool_stride <= stride <= max_stride
    assert min(settings.min_anyres_max, settings.anyres_max) <= n <= settings.anyres_max
    assert plan == dataclasses.replace(plan_sample(media, _fixed(settings, cap=cap, stride=stride, n=n)), budget=budget, degraded=plan.degraded)

    def total(c, s, k):
        return plan_sample(media, _fixed(settings, cap=c, stride=s, n=k)).total

    # Each level gives up no more than needed, in the documented order.
    if cap < top_cap:
        assert total(cap + 1, stride, n) > budget, "dropped more frames than needed"
    if stride > settings.video_pool_stride:
        assert total(min_cap, stride - 1, n) > budget, "pooled harder before running out of frames"
    if n < settings.anyres_max:
        assert total(min_cap, max_stride, n + 1) > budget, "lowered N before exhausting frames and pooling"
    steps = " ".join(plan.degraded)
    assert ("frames" in steps) == (cap < top_cap)
    assert ("stride" in steps) == (stride != settings.video_pool_stride)
    assert ("anyres_max" in steps) == (n != settings.anyres_max)


@hyp_settings(max_examples=1000, **QUICK)
@given(media=sample_media, settings=visual_settings(budget=False), data=st.data())
def test_model_layout_produces_plan_tokens(media, settings, data):
    plan = plan_sample(media, settings)
    assert all(min(item.pooled) >= 1 for item in plan.items if isinstance(item, AnyResPlan) and min(item.unpadded) >= 1)
    side = settings.patches_per_side
    dim = 2
    tiles = torch.randn(sum(item.num_tiles for item in plan.items), side * side, dim)
    newline = torch.randn(dim)
    item = data.draw(st.sampled_from(plan.items))
    index = plan.items.index(item)
    start = sum(p.num_tiles for p in plan.items[:index])
    one = layout_item(item, tiles[start : start + item.num_tiles], newline)
    assert one.shape == (item.tokens, dim)
    laid = layout_items(list(plan.items), tiles, newline)
    assert [t.shape[0] for t in laid] == [p.tokens for p in plan.items]
    assert sum(t.shape[0] for t in laid) == plan.total


def test_thin_map_never_shrinks_to_zero_columns():
    """1 patch per tile, N=1: a 1x2 image's 2x1 crop map shrinks to 1x1, not 1x0 (bilinear cannot make 0)."""
    settings = VisualSettings(image_size=1, patch_size=1, anyres_max=1, max_grid=2)
    item = plan_sample([ImageMedia(width=1, height=2)], settings).items[0]
    assert item.unpadded == (2, 1) and item.pooled == (1, 1) and item.tokens == 1 + 1 + 1
    out = layout_item(item, torch.randn(item.num_tiles, 1, 2), torch.randn(2))
    assert out.shape == (3, 2)
