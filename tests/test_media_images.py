"""Image decoding: unusual but valid images load as upright RGB, broken ones raise MediaError."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from media_factory import (
    BROKEN_IMAGES,
    UNUSUAL_IMAGES,
    make_broken,
    make_exif_rotated_jpeg,
    make_unusual_images,
)
from PIL import Image, ImageFile

from onevision.data.media import MediaError, image_size, load_image


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_unusual_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return make_broken(tmp_path_factory.mktemp("broken"))


def pixels(images, name) -> np.ndarray:
    return np.asarray(load_image(images[name]))


@pytest.mark.parametrize("name", UNUSUAL_IMAGES)
def test_unusual_image_loads_as_rgb_with_header_size(images, name):
    image = load_image(images[name])
    assert image.mode == "RGB"
    assert image.size == image_size(images[name])
    array = np.asarray(image)
    assert array.dtype == np.uint8 and array.shape == (image.size[1], image.size[0], 3)


def test_extreme_aspect_ratios_keep_their_size(images):
    assert load_image(images["tiny_1x1"]).size == (1, 1)
    assert load_image(images["tall_1x5000"]).size == (1, 5000)
    assert image_size(images["panorama_6000x40"]) == (6000, 40)
    np.testing.assert_allclose(
        pixels(images, "panorama_6000x40").mean(axis=(0, 1)), (200, 30, 40), atol=4
    )


def test_exif_orientation_6_is_rotated_upright(images):
    path = images["exif_rotated_jpeg"]
    with Image.open(path) as raw:
        assert raw.size == (64, 32)
    assert image_size(path) == (32, 64)
    upright = pixels(images, "exif_rotated_jpeg")
    assert upright.shape == (64, 32, 3)
    quadrant = {
        name: upright[y, x].astype(int)
        for name, (y, x) in {
            "top_left": (8, 8),
            "top_right": (8, 24),
            "bottom_left": (56, 8),
            "bottom_right": (56, 24),
        }.items()
    }
    expected = {"top_left": (0, 0, 255), "top_right": (255, 0, 0),
                "bottom_left": (255, 255, 255), "bottom_right": (0, 255, 0)}  # fmt: skip
    for name, colour in expected.items():
        np.testing.assert_allclose(quadrant[name], colour, atol=30, err_msg=name)


@pytest.mark.parametrize("orientation, size", [(1, (64, 32)), (3, (64, 32)), (8, (32, 64))])
def test_image_size_follows_every_orientation(tmp_path, orientation, size):
    path = make_exif_rotated_jpeg(tmp_path / f"o{orientation}.jpg", orientation=orientation)
    assert image_size(path) == size == load_image(path).size


def test_sixteen_bit_png_is_scaled_not_clipped(images):
    with Image.open(images["gray16_png"]) as raw:
        assert raw.mode.startswith("I")
    row = pixels(images, "gray16_png")[0]
    assert np.array_equal(row[:, 0], np.arange(256))
    assert np.array_equal(row[:, 0], row[:, 2])


def test_palette_transparency_is_composited_on_white(images):
    array = pixels(images, "palette_transparent_png")
    assert tuple(array[4, 2]) == (255, 0, 0)
    assert tuple(array[4, 12]) == (255, 255, 255)


@pytest.mark.parametrize("name, opaque", [("rgba_png", (40, 60, 80)), ("la_png", (40, 40, 40))])
def test_alpha_is_composited_on_white(images, name, opaque):
    array = pixels(images, name)
    assert tuple(array[2, 2]) == opaque
    assert tuple(array[-2, 2]) == (255, 255, 255)


def test_cmyk_jpeg_becomes_red(images):
    np.testing.assert_allclose(pixels(images, "cmyk_jpeg").mean(axis=(0, 1)), (255, 0, 0), atol=6)


def test_animated_gif_gives_first_frame(images):
    assert tuple(pixels(images, "animated_gif")[8, 8]) == (255, 0, 0)


def test_grey_and_bilevel_replicate_to_three_channels(images):
    assert np.all(pixels(images, "gray_png") == 100)
    assert np.all(pixels(images, "bilevel_png") == 255)


def test_image_size_reads_header_only(images, monkeypatch):
    def no_decoding(self):
        raise AssertionError("image_size decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert image_size(images["exif_rotated_jpeg"]) == (32, 64)
    assert image_size(images["gray16_png"]) == (256, 4)


@pytest.mark.parametrize("name", BROKEN_IMAGES)
def test_broken_image_raises_media_error_naming_the_file(broken, name):
    with pytest.raises(MediaError) as caught:
        load_image(broken[name])
    assert str(broken[name]) in str(caught.value)
    assert caught.value.path == str(broken[name])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("name, words", [
    ("missing_image", "does not exist"), ("zero_byte_image", "0 bytes"),
    ("truncated_jpeg", "truncated"), ("html_png", "<!DOCTYPE html"),
])  # fmt: skip
def test_broken_image_reason_says_what_is_wrong(broken, name, words):
    with pytest.raises(MediaError, match=words):
        load_image(broken[name])


def test_image_size_rejects_non_images_but_not_a_truncated_tail(broken):
    for name in ("missing_image", "zero_byte_image", "html_png"):
        with pytest.raises(MediaError):
            image_size(broken[name])
    assert image_size(broken["truncated_jpeg"]) == (64, 48)


def test_media_error_survives_pickling():
    error = pickle.loads(pickle.dumps(MediaError("/data/a.jpg", "image file is truncated")))
    assert str(error) == "/data/a.jpg: image file is truncated"
    assert (error.path, error.reason) == ("/data/a.jpg", "image file is truncated")
