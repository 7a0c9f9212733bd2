"""Pixel preprocessing == transformers' LlavaOnevisionImageProcessorPil, bit for bit.

Single images (AnyRes base view + crops) and multi-image pad-to-square are compared with the
reference processor configured like our settings, at the real 384 px size (one image) and at
a tiny 64 px size (many shapes, extreme aspect ratios included); video frames with the
reference's own resize / rescale / normalize steps. Tile counts are checked against the plans.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlavaOnevisionImageProcessorPil
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling, SizeDict

from onevision.budget import ImageMedia, VideoMedia, VisualSettings, plan_sample
from onevision.processing import (
    ImageNormalization,
    normalize_tiles,
    preprocess_image,
    preprocess_item,
    preprocess_video,
)

TINY = VisualSettings(image_size=64, patch_size=8, anyres_max=4, max_grid=3)
CLIP = ImageNormalization(mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)
TINY_SIZES = [(64, 64), (130, 97), (97, 130), (1, 50), (50, 1), (200, 30), (7, 7), (190, 191), (65, 64), (300, 120)]


def reference(settings: VisualSettings, norm: ImageNormalization) -> LlavaOnevisionImageProcessorPil:
    side = settings.image_size
    return LlavaOnevisionImageProcessorPil(
        size={"height": side, "width": side},
        image_grid_pinpoints=[list(p) for p in settings.pinpoints()],
        image_mean=list(norm.mean),
        image_std=list(norm.std),
    )


def random_image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def assert_identical(ours: torch.Tensor, theirs: torch.Tensor, what: str):
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} vs reference {tuple(theirs.shape)}"
    assert ours.dtype == torch.float32
    diff = (ours - theirs).abs().max().item()
    assert torch.equal(ours, theirs), f"{what}: max |ours - reference| = {diff}"


def test_single_image_real_size_matches_reference():
    settings = VisualSettings()
    image = random_image(640, 480, seed=1)
    plan = plan_sample([ImageMedia(640, 480)], settings).items[0]
    ours = preprocess_image(image, plan, settings.image_size)
    theirs = reference(settings, ImageNormalization())([image], return_tensors="pt")["pixel_values"][0]
    assert ours.shape == (plan.num_tiles, 3, 384, 384) == (5, 3, 384, 384)
    assert_identical(ours, theirs, "640x480")


@pytest.mark.parametrize("norm", [ImageNormalization(), CLIP], ids=["siglip", "clip"])
def test_single_image_tiny_size_matches_reference(norm):
    processor = reference(TINY, norm)
    for index, (width, height) in enumerate(TINY_SIZES):
        image = random_image(width, height, seed=index)
        plan = plan_sample([ImageMedia(width, height)], TINY).items[0]
        ours = preprocess_image(image, plan, TINY.image_size, norm)
        theirs = processor([image], return_tensors="pt")["pixel_values"][0]
        assert ours.shape[0] == plan.num_tiles == 1 + plan.grid[0] * plan.grid[1]
        assert_identical(ours, theirs, f"{width}x{height}")


@pytest.mark.parametrize("norm", [ImageNormalization(), CLIP], ids=["siglip", "clip"])
def test_multi_image_pad_to_square_matches_reference(norm):
    sizes = [(130, 97), (40, 200), (64, 64), (1, 9)]
    images = [random_image(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    plans = plan_sample([ImageMedia(w, h) for w, h in sizes], TINY).items
    theirs = reference(TINY, norm)([images], return_tensors="pt")["pixel_values"]
    assert theirs.shape == (len(sizes), 1, 3, 64, 64)
    for index, (image, plan) in enumerate(zip(images, plans)):
        ours = preprocess_image(image, plan, TINY.image_size, norm)
        assert ours.shape[0] == plan.num_tiles == 1
        assert_identical(ours, theirs[index], f"multi-image {sizes[index]}")
    # The padding is the mean colour: a black image's padded rows normalise to int(mean*255)/255.
    black = Image.new("RGB", (64, 16))
    plan = plan_sample([ImageMedia(64, 16), ImageMedia(8, 8)], TINY).items[0]
    corner = preprocess_image(black, plan, 64, norm)[0, :, 0, 0]
    expected = [(int(m * 255) / 255 - m) / s for m, s in zip(norm.mean, norm.std)]
    assert torch.allclose(corner, torch.tensor(expected), atol=1e-6)


def test_random_sizes_give_plan_tile_counts():
    rng = np.random.default_rng(5)
    for width, height in rng.integers(1, 400, size=(40, 2)):
        plan = plan_sample([ImageMedia(int(width), int(height))], TINY).items[0]
        pixels = preprocess_item(Image.new("RGB", (int(width), int(height))), plan, TINY.image_size)
        assert pixels.shape == (plan.num_tiles, 3, 64, 64)


def test_video_frames_match_reference_steps():
    frames = np.random.default_rng(3).integers(0, 256, size=(5, 48, 80, 3), dtype=np.uint8)
    plan = plan_sample([VideoMedia(5)], TINY).items[0]
    ours = preprocess_video(torch.from_numpy(frames), plan, TINY.image_size, CLIP)
    processor = reference(TINY, CLIP)
    size = SizeDict(height=64, width=64)
    for index, frame in enumerate(frames):
        step = processor.resize(frame.transpose(2, 0, 1), size=size, resample=PILImageResampling.BICUBIC)
        step = processor.normalize(processor.rescale(step, 1 / 255), mean=CLIP.mean, std=CLIP.std)
        assert_identical(ours[index], torch.from_numpy(step), f"frame {index}")
    assert preprocess_item(frames, plan, 64, CLIP).shape == (plan.num_tiles, 3, 64, 64)
    with pytest.raises(ValueError, match="got 4 frames but the video's plan has 5"):
        preprocess_video(frames[:4], plan, 64)
    with pytest.raises(ValueError, match=r"uint8 RGB frames \[F, H, W, 3\]"):
        preprocess_video(frames.astype(np.float32), plan, 64)


@pytest.mark.parametrize("norm", [ImageNormalization(), CLIP], ids=["siglip", "clip"])
def test_normalisation_is_the_reference_arithmetic_for_every_value(norm):
    values = np.arange(256, dtype=np.uint8)
    tiles = np.broadcast_to(values, (1, 3, 1, 256)).copy()
    rescaled = (tiles.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.array(norm.mean, np.float32)[None, :, None, None]
    std = np.array(norm.std, np.float32)[None, :, None, None]
    assert torch.equal(normalize_tiles(tiles, norm), torch.from_numpy((rescaled - mean) / std))


def test_normalization_from_pretrained_dir(tmp_path):
    assert ImageNormalization.from_pretrained_dir(tmp_path) == ImageNormalization()
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD), "resample": 2})
    )
    loaded = ImageNormalization.from_pretrained_dir(tmp_path)
    assert loaded == ImageNormalization(mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD, resample="bilinear")
    assert loaded.background == (122, 116, 104)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": 0.5, "resample": 3}))
    assert ImageNormalization.from_pretrained_dir(tmp_path) == ImageNormalization()
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_std": [0.5, 0.5]}))
    with pytest.raises(ValueError, match="preprocessor_config.json: image_std must be a number or 3 numbers"):
        ImageNormalization.from_pretrained_dir(tmp_path)


def test_mismatched_inputs_raise_with_numbers():
    plan = plan_sample([ImageMedia(100, 50)], TINY).items[0]
    with pytest.raises(ValueError, match=r"image is 50x100 \(width x height\) but its plan was made for 100x50"):
        preprocess_image(Image.new("RGB", (50, 100)), plan, 64)
    with pytest.raises(ValueError, match="expected an RGB image, got mode 'RGBA'"):
        preprocess_image(Image.new("RGBA", (100, 50)), plan, 64)
    with pytest.raises(ValueError, match="grid pinpoints must be multiples of image_size=48"):
        preprocess_image(Image.new("RGB", (100, 50)), plan, 48)
