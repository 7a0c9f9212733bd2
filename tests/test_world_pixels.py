"""The world's answers are in its pixels: re-derive every answer from the written files.

Each image (PNG or JPEG) and video (H.264 mp4, decoded with PyAV) is segmented by nearest
palette colour and connected components (`onevision.world.perceive`); colour, shape, count,
quadrant, odd image, motion direction, appearance order and colour change are recomputed from
the blobs and compared with the record's answer.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onevision.world import (
    QUADRANTS,
    SHAPES,
    TASKS,
    WorldObject,
    build_world,
    caption_pairs,
    find_objects,
    read_video,
)
from onevision.world.perceive import connected_components
from onevision.world.scene import radius_for, render_objects
from onevision.world.text import join_phrases

ORDINALS = ["first", "second", "third", "fourth"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return build_world(root, seed=7, n_train=6, n_test=2, progress=False)


@pytest.fixture(scope="module")
def odd_world(tmp_path_factory):
    """Another image size and clip length, JPEG only."""
    return build_world(
        tmp_path_factory.mktemp("world96"), seed=3, n_train=2, n_test=0, image_size=96, frames=12,
        jpeg_fraction=1.0, progress=False,
    )


def size_word(blob, image_size: int) -> str:
    width = blob.bbox[2] - blob.bbox[0] + 1
    small, large = radius_for("small", image_size), radius_for("large", image_size)
    return "small" if width <= small + large + 1 else "large"


def caption_from_pixels(blobs, image_size: int) -> str:
    ordered = sorted(blobs, key=lambda b: QUADRANTS.index(b.quadrant(image_size)))
    return join_phrases([
        f"a {size_word(b, image_size)} {b.colour} {b.shape} at the {b.quadrant(image_size)}"
        for b in ordered
    ]) + "."


def only(blobs):
    assert len(blobs) == 1, f"expected one object, found {blobs}"
    return blobs[0]


def video_answer(task: str, frames: list[list], image_size: int) -> str:
    if task == "vid_direction":
        start, end = only(frames[0]), only(frames[-1])
        dx, dy = end.x - start.x, end.y - start.y
        # The object crosses the frame's middle: it starts on one side and ends on the other.
        along = (start.x, end.x) if abs(dx) > abs(dy) else (start.y, end.y)
        assert min(along) < image_size / 2 < max(along), (start, end)
        if abs(dx) > abs(dy):
            return "right" if dx > 0 else "left"
        return "down" if dy > 0 else "up"
    if task == "vid_first_colour":
        return only(next(f for f in frames if f)).colour
    if task == "vid_count":
        return str(len({(b.colour, b.quadrant(image_size)) for f in frames for b in f}))
    if task == "vid_colour_change":
        before, after = only(frames[0]).colour, only(frames[-1]).colour
        assert before != after
        return after
    raise KeyError(task)


def image_answer(record: dict, found: list[list], image_size: int) -> str:
    task = record["task"]
    if task == "si_colour":
        return only(found[0]).colour
    if task == "si_shape":
        return only(found[0]).shape
    if task == "si_count":
        return str(len(found[0]))
    if task == "si_position":
        question = record["conversations"][0]["value"]
        colour, shape = re.search(r"Where is the (\w+) (\w+)\?", question).groups()
        target = only([b for b in found[0] if b.colour == colour and b.shape == shape])
        return target.quadrant(image_size)
    if task == "si_caption":
        return caption_from_pixels(found[0], image_size)
    if task == "mi_odd_one_out":
        colours = [only(f).colour for f in found]
        return ORDINALS[only([i for i, c in enumerate(colours) if colours.count(c) == 1])]
    if task == "mi_total_count":
        return str(sum(len(f) for f in found))
    if task == "mi_same_colour":
        return "yes" if only(found[0]).colour == only(found[1]).colour else "no"
    if task == "mi_more_objects":
        assert len(found[0]) != len(found[1])
        return "first" if len(found[0]) > len(found[1]) else "second"
    raise KeyError(task)


def answer_from_pixels(record: dict, root: Path, image_size: int) -> str:
    if record["scenario"] == "video":
        frames = read_video(root / record["video"])
        return video_answer(record["task"], [find_objects(f) for f in frames], image_size)
    paths = record["image"] if isinstance(record["image"], list) else [record["image"]]
    found = []
    for path in paths:
        with Image.open(root / path) as image:
            assert image.size == (image_size, image_size)
            found.append(find_objects(image))
    return image_answer(record, found, image_size)


@pytest.mark.parametrize("task", list(TASKS))
def test_answers_rederived_from_written_files(world, task):
    records = world.records("train", task) + world.records("test", task)
    assert len(records) == 8
    for record in records:
        got = answer_from_pixels(record, world.root, 64)
        assert got == record["answer"], f"{record['id']}: pixels say {got!r}"


@pytest.mark.slow
def test_answers_rederived_at_96px_12_frames_all_jpeg(odd_world):
    for task in TASKS:
        for record in odd_world.records("train", task):
            if record["scenario"] != "video":
                images = record["image"] if isinstance(record["image"], list) else [record["image"]]
                assert all(p.endswith(".jpg") for p in images)
            else:
                assert len(read_video(odd_world.root / record["video"])) == 12
            got = answer_from_pixels(record, odd_world.root, 96)
            assert got == record["answer"], f"{record['id']}: pixels say {got!r}"


def test_caption_pairs_describe_their_pixels():
    for image, text in caption_pairs(24, seed=5):
        assert caption_from_pixels(find_objects(image), 64) == text


@pytest.mark.parametrize("size", ["small", "large"])
def test_every_shape_is_recognised_at_both_sizes(size):
    radius = radius_for(size, 64)
    for shape in SHAPES:
        objects = [WorldObject(shape, "blue", size, 16, 16, radius)]
        (blob,) = find_objects(render_objects(objects, 64))
        assert (blob.shape, blob.colour) == (shape, "blue")
        assert blob.bbox == (16 - radius, 16 - radius, 16 + radius, 16 + radius)


def test_connected_components_separates_touching_colours_and_diagonals():
    mask = np.array([
        [1, 1, 0, 0, 1],
        [0, 1, 0, 1, 1],
        [0, 0, 1, 0, 0],
        [1, 0, 0, 0, 1],
    ], dtype=bool)
    labels, count = connected_components(mask)
    assert count == 5  # 4-connectivity: the diagonal pixel (2, 2) is its own component
    assert labels[0, 0] == labels[1, 1] != labels[2, 2]
    assert labels[0, 4] == labels[1, 3]
    assert (labels == 0).sum() == (~mask).sum()
