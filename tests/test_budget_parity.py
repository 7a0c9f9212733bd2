"""Token counts of the planner == transformers' LlavaOnevisionProcessor, image by image.

The reference is a real `LlavaOnevisionProcessor` (transformers 5.23) built locally: the
PIL image processor, a tiny WordLevel tokenizer with `<image>` and `<video>` as special
tokens, no hub. Its counting code is what decides how many placeholders transformers writes,
so every size where the two disagree would misalign a released checkpoint's inputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlavaOnevisionImageProcessorPil, LlavaOnevisionProcessor, PreTrainedTokenizerFast
from transformers.processing_utils import ProcessorMixin

from onevision.budget import ImageMedia, VideoMedia, VisualSettings, plan_sample
from onevision.model.config import preset

WORKED = [((384, 384), 1485), ((640, 480), 2929), ((2304, 2304), 7371), ((1920, 1080), 7269)]  # (width, height)
EXTREMES = [(1, 4000), (4000, 1), (3, 2000), (2000, 3), (1, 1), (2, 2), (1, 383), (383, 1), (4000, 4000), (385, 1), (768, 1)]


def random_sizes(count: int, seed: int) -> list[tuple[int, int]]:
    """(width, height) pairs: half log-uniform over 1..4000 px, half uniform, plus the extremes."""
    rng = np.random.default_rng(seed)
    log_sides = np.exp(rng.uniform(0, np.log(4000), size=(count // 2, 2))).astype(int).clip(1, 4000)
    flat_sides = rng.integers(1, 4001, size=(count - count // 2, 2))
    return [tuple(map(int, s)) for s in np.concatenate([log_sides, flat_sides])] + EXTREMES


def build_processor(settings: VisualSettings, monkeypatch) -> LlavaOnevisionProcessor:
    """A LlavaOnevisionProcessor configured like `settings`, with a local tokenizer."""
    # The video processor needs torchvision, which the project does not depend on; counting
    # video tokens does not touch it, so the processor is built with none.
    check = ProcessorMixin.check_argument_for_proper_class
    monkeypatch.setattr(
        ProcessorMixin,
        "check_argument_for_proper_class",
        lambda self, name, arg: None if (name == "video_processor" and arg is None) else check(self, name, arg),
    )
    words = Tokenizer(models.WordLevel({"<unk>": 0, "describe": 1}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>", "<video>"]})
    size = settings.image_size
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": size, "width": size},
        image_grid_pinpoints=[list(p) for p in settings.pinpoints()],
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    return LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        num_image_tokens=settings.patches_per_side**2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio=f"anyres_max_{settings.anyres_max}",
    )


def hf_image_counts(processor, sizes: list[tuple[int, int]]) -> list[int]:
    data = processor._get_num_multimodal_tokens(image_sizes=[[h, w] for w, h in sizes])
    return list(data["num_image_tokens"])


def our_counts(sizes: list[tuple[int, int]], settings: VisualSettings) -> list[int]:
    return [plan_sample([ImageMedia(w, h)], settings).total for w, h in sizes]


def assert_same(sizes, ours, theirs):
    wrong = [(s, a, b) for s, a, b in zip(sizes, ours, theirs) if a != b]
    assert not wrong, f"{len(wrong)} of {len(sizes)} sizes differ, (width, height), ours, transformers: {wrong[:10]}"


def test_worked_checks_match_transformers(monkeypatch):
    settings = VisualSettings()
    processor = build_processor(settings, monkeypatch)
    sizes = [size for size, _ in WORKED]
    assert our_counts(sizes, settings) == [count for _, count in WORKED]
    assert hf_image_counts(processor, sizes) == [count for _, count in WORKED]


@pytest.mark.parametrize("anyres_max", [9, 5, 1])
def test_single_image_counts_match_transformers(monkeypatch, anyres_max):
    settings = VisualSettings(anyres_max=anyres_max)
    processor = build_processor(settings, monkeypatch)
    sizes = random_sizes(400, seed=anyres_max)
    assert_same(sizes, our_counts(sizes, settings), hf_image_counts(processor, sizes))


def test_debug_size_counts_match_transformers(monkeypatch):
    settings = preset("debug").visual
    assert (settings.image_size, settings.patch_size) == (64, 8)
    processor = build_processor(settings, monkeypatch)
    sizes = random_sizes(400, seed=11)
    assert_same(sizes, our_counts(sizes, settings), hf_image_counts(processor, sizes))


def test_single_image_placeholders_written_by_processor(monkeypatch):
    """The processor's own call (pixels included) writes as many `<image>` tokens as we plan."""
    settings = VisualSettings()
    processor = build_processor(settings, monkeypatch)
    image = Image.new("RGB", (640, 480), (10, 20, 30))
    out = processor(text=["<image> describe"], images=[image], return_tensors="np")
    assert int((out["input_ids"] == processor.image_token_id).sum()) == 2929
    assert plan_sample([ImageMedia(640, 480)], settings).total == 2929


@pytest.mark.parametrize("sizes", [[(768, 768), (1152, 1152)], [(30, 70), (50, 20), (64, 64)]])
def test_multi_image_counts_match_processor(monkeypatch, sizes):
    settings = VisualSettings()
    processor = build_processor(settings, monkeypatch)
    images = [Image.new("RGB", size, (200, 100, 0)) for size in sizes]
    out = processor(text=["<image>" * len(images) + " describe"], images=[images], return_tensors="np")
    hf_count = int((out["input_ids"] == processor.image_token_id).sum())
    plan = plan_sample([ImageMedia(w, h) for w, h in sizes], settings)
    assert [item.tokens for item in plan.items] == [730] * len(sizes)
    assert plan.total == hf_count == 730 * len(sizes)


@pytest.mark.parametrize("model_size", ["0.5b", "debug"])
def test_video_counts_match_transformers(monkeypatch, model_size):
    settings = dataclasses.replace(preset(model_size).visual, frames_upbound=256)
    assert settings.video_newline == "video"
    processor = build_processor(settings, monkeypatch)
    frame_counts = [1, 2, 7, 8, 16, 32, 33, 64, 256]
    side = settings.image_size
    theirs = processor._get_num_multimodal_tokens(video_sizes=[[f, side, side] for f in frame_counts])["num_video_tokens"]
    ours = [plan_sample([VideoMedia(f)], settings).total for f in frame_counts]
    assert ours == list(theirs)
    if model_size == "0.5b":
        assert ours[frame_counts.index(32)] == 196 * 32 + 1 == 6273
