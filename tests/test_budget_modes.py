"""Planner modes beyond the defaults: base-resolution single images (stage 1)."""

import pytest

from onevision.budget import BaseImagePlan, ImageMedia, VideoMedia, VisualSettings, plan_sample


def test_base_mode_plans_a_lone_image_like_one_of_a_set():
    plan = plan_sample([ImageMedia(640, 480)], VisualSettings(single_image="base"))
    assert isinstance(plan.items[0], BaseImagePlan)
    assert plan.total == 27 * 27 + 1
    assert plan_sample([ImageMedia(640, 480)], VisualSettings()).total == 2929


def test_base_mode_leaves_videos_alone():
    plan = plan_sample([ImageMedia(64, 64), VideoMedia(8)], VisualSettings(single_image="base"))
    assert [item.tokens for item in plan.items] == [730, 196 * 8 + 1]


def test_unknown_single_image_mode_is_rejected():
    with pytest.raises(ValueError, match="single_image must be"):
        VisualSettings(single_image="crops")


def test_scenario_counts_images_not_plan_kinds():
    base = VisualSettings(single_image="base")
    assert plan_sample([ImageMedia(64, 64)], base).scenario == "single_image"
    assert plan_sample([ImageMedia(64, 64)] * 2, base).scenario == "multi_image"
    assert plan_sample([], base).scenario == "text"
