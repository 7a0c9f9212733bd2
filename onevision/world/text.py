"""Words for the synthetic world: captions, sentences and image-caption pairs.

Captions are a deterministic function of the scene (objects listed in quadrant order), so
the caption task's answer is known by construction. `world_texts` gives plain sentences for
pretraining a decoder on the world's vocabulary, `caption_pairs` gives rendered images with
their captions for pretraining the vision tower with a sigmoid contrastive loss.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from onevision.world.scene import (
    COLOURS,
    QUADRANTS,
    SHAPES,
    Scene,
    WorldObject,
    random_object,
    random_quadrants,
    random_scene,
    render_scene,
)
from onevision.world.video_scene import DIRECTIONS, moving_track

CAPTION_PROMPTS: tuple[str, ...] = (
    "Describe the image briefly.",
    "Give a short caption for the image.",
    "What is in the image?",
    "Summarize the picture in one sentence.",
)
"""Stage-1 caption prompts; one is drawn per sample, as in LLaVA's pretraining data."""


def describe_object(obj: WorldObject, image_size: int) -> str:
    """E.g. "a large red circle at the top left"."""
    return f"a {obj.size} {obj.colour} {obj.shape} at the {obj.quadrant(image_size)}"


def join_phrases(phrases: list[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def caption(scene: Scene) -> str:
    """One sentence naming every object in quadrant order, e.g.
    "a large red circle at the top left and a small blue cross at the bottom right."
    """
    ordered = sorted(scene.objects, key=lambda o: QUADRANTS.index(o.quadrant(scene.image_size)))
    return join_phrases([describe_object(o, scene.image_size) for o in ordered]) + "."


def count_phrase(count: int) -> str:
    return "there is 1 shape." if count == 1 else f"there are {count} shapes."


def _scene_sentence(rng: np.random.Generator, image_size: int) -> str:
    scene = random_scene(rng, image_size, int(rng.integers(1, 5)))
    kind = int(rng.integers(3))
    if kind == 0:
        return caption(scene)
    if kind == 1:
        return count_phrase(len(scene.objects))
    obj = scene.objects[int(rng.integers(len(scene.objects)))]
    return f"the {obj.colour} {obj.shape} is at the {obj.quadrant(image_size)}."


def _video_sentence(rng: np.random.Generator, image_size: int, frames: int) -> str:
    colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
    kind = int(rng.integers(3))
    if kind == 0:
        direction = str(rng.choice(list(DIRECTIONS)))
        track = moving_track(rng, image_size, frames, direction, colour=colour, shape=shape)
        return f"a {track.obj.size} {colour} {shape} moves {direction}."
    if kind == 1:
        new = str(rng.choice([c for c in COLOURS if c != colour]))
        return f"the {colour} {shape} turns {new}."
    count = int(rng.integers(2, 4))
    colours = [str(c) for c in rng.permutation(list(COLOURS))[:count]]
    shapes = [str(s) for s in rng.choice(SHAPES, size=count)]
    return ", then ".join(f"a {c} {s} appears" for c, s in zip(colours, shapes)) + "."


def world_texts(n: int, seed: int = 0, *, image_size: int = 64, frames: int = 8) -> list[str]:
    """`n` plain sentences about random scenes and clips (captions, counts, positions,
    motion, appearance order, colour changes), deterministic in `seed`."""
    rng = np.random.default_rng([seed, 0x7E47])
    texts = []
    for _ in range(n):
        if rng.random() < 0.7:
            texts.append(_scene_sentence(rng, image_size))
        else:
            texts.append(_video_sentence(rng, image_size, frames))
    return texts


def random_caption_scene(rng: np.random.Generator, image_size: int) -> Scene:
    """A scene of 1 to 3 objects, the kind the caption task and `caption_pairs` use."""
    quadrants = random_quadrants(rng, int(rng.integers(1, 4)))
    return Scene(tuple(random_object(rng, image_size, q) for q in quadrants), image_size)


def caption_pairs(n: int, seed: int = 0, *, image_size: int = 64) -> list[tuple[Image.Image, str]]:
    """`n` (RGB image, caption) pairs of 1-3 object scenes, deterministic in `seed`."""
    rng = np.random.default_rng([seed, 0xCA9])
    pairs = []
    for _ in range(n):
        scene = random_caption_scene(rng, image_size)
        pairs.append((render_scene(scene), caption(scene)))
    return pairs
