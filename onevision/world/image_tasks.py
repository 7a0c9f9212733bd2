"""Question generators over still images: single-image and multi-image tasks.

Each generator takes the answer it is asked for (or draws one uniformly when given None),
builds a scene that has that answer, then renders it. Signature:
`(rng, config, answer=None) -> WorldSample`; the builder passes answers in balanced blocks
(see `onevision.world.tasks.balanced_answer`), so chance is exactly 1/len(choices).

Single image: colour and shape of the one object, how many objects (1-4), where a named
object is (quadrant), and a caption (free text, for stage-1 alignment).
Multi-image: which of four images shows a different colour, how many objects two images hold
together (2-5), whether two images show the same colour, which of two images has more objects.
"""

from __future__ import annotations

import numpy as np

from onevision.world.sample import WorldSample
from onevision.world.scene import (
    COLOURS,
    QUADRANTS,
    SHAPES,
    SIZES,
    Scene,
    WorldConfig,
    random_object,
    random_scene,
    render_scene,
)
from onevision.world.text import CAPTION_PROMPTS, caption, random_caption_scene

COLOUR_CHOICES = tuple(COLOURS)
COUNT_CHOICES = ("1", "2", "3", "4")
ORDINALS = ("first", "second", "third", "fourth")
TOTAL_CHOICES = ("2", "3", "4", "5")
YES_NO = ("yes", "no")


def _pick(rng: np.random.Generator, options) -> str:
    return str(options[int(rng.integers(len(options)))])


def _single_object(rng: np.random.Generator, image_size: int, **fixed) -> Scene:
    return Scene((random_object(rng, image_size, _pick(rng, QUADRANTS), **fixed),), image_size)


def si_colour(
    rng: np.random.Generator, config: WorldConfig, answer: str | None = None
) -> WorldSample:
    colour = answer or _pick(rng, COLOUR_CHOICES)
    scene = _single_object(rng, config.image_size, colour=colour)
    return WorldSample(
        "si_colour", "single_image", "What colour is the shape?", colour, COLOUR_CHOICES,
        images=(render_scene(scene),),
    )


def si_shape(
    rng: np.random.Generator, config: WorldConfig, answer: str | None = None
) -> WorldSample:
    shape = answer or _pick(rng, SHAPES)
    scene = _single_object(rng, config.image_size, shape=shape)
    return WorldSample(
        "si_shape", "single_image", "What shape is shown?", shape, SHAPES,
        images=(render_scene(scene),),
    )


def si_count(
    rng: np.random.Generator, config: WorldConfig, answer: str | None = None
) -> WorldSample:
    count = int(answer or rng.integers(1, 5))
    scene = random_scene(rng, config.image_size, count)
    return WorldSample(
        "si_count", "single_image", "How many shapes are there?", str(count), COUNT_CHOICES,
        images=(render_scene(scene),),
    )


def si_position(
    rng: np.random.Generator, config: WorldConfig, answer: str | None = None
) -> WorldSample:
    count = int(rng.integers(1, 4))
    colours = [str(c) for c in rng.permutation(COLOUR_CHOICES)[:count]]
    target_index = int(rng.integers(count))
    quadrant = answer or _pick(rng, QUADRANTS)
    others = [q for q in QUADRANTS if q != quadrant]
    quadrants = [str(q) for q in rng.permutation(others)[: count - 1]]
    quadrants.insert(target_index, quadrant)
    scene = Scene(
        tuple(
            random_object(rng, config.image_size, q, colour=c) for q, c in zip(quadrants, colours)
        ),
        config.image_size,
    )
    target = scene.objects[target_index]
    return WorldSample(
        "si_position", "single_image", f"Where is the {target.colour} {target.shape}?",
        target.quadrant(config.image_size), QUADRANTS, images=(render_scene(scene),),
    )


def si_caption(
    rng: np.random.Generator, config: WorldConfig, answer: str | None = None
) -> WorldSample:
    if answer is not None:
        raise ValueError("si_caption: a caption follows from the scene and cannot be asked for")
    scene = random_caption_scene(rng, config.image_size)
    prompt = _pick(rng, CAPTION_PROMPTS)
    return WorldSample(
        "si_caption", "single_image", prompt, caption(scene), (), images=(render_scene(scene),)
    )


def mi_odd_one_out(
    rng: np.random.Generator, config: WorldConfig, answer: str | None = None
) -> WorldSample:
    odd = ORDINALS.index(answer) if answer else int(rng.integers(len(ORDINALS)))
    colour = _pick(rng, COLOUR_CHOICES)
    odd_colour = _pick(rng, [c for c in COLOUR_CHOICES if c != colour])
    shape, size = _pick(rng, SHAPES), _pick(rng, list(SIZES))
    images = tuple(
        render_scene(
            _single_object(
                rng, config.image_size, colour=odd_colour if i == odd else colour,
                shape=shape, size=size,
            )
        )
        for i in range(len(ORDINALS))
    )
    return WorldSample(
        "mi_odd_one_out", "multi_image", "Which image shows a different colour from the others?",
        ORDINALS[odd], ORDINALS, images=images,
    )


def mi_total_count(
    rng: np.random.Generator, config: WorldConfig, answer: str | None = None
) -> WorldSample:
    total = int(answer or rng.integers(2, 6))
    first = int(rng.integers(max(1, total - 4), min(4, total - 1) + 1))
    images = tuple(
        render_scene(random_scene(rng, config.image_size, n)) for n in (first, total - first)
    )
    return WorldSample(
        "mi_total_count", "multi_image", "How many shapes are there in the two images together?",
        str(total), TOTAL_CHOICES, images=images,
    )


def mi_same_colour(
    rng: np.random.Generator, config: WorldConfig, answer: str | None = None
) -> WorldSample:
    same = answer == "yes" if answer else bool(rng.integers(2))
    colour = _pick(rng, COLOUR_CHOICES)
    other = colour if same else _pick(rng, [c for c in COLOUR_CHOICES if c != colour])
    images = tuple(
        render_scene(_single_object(rng, config.image_size, colour=c)) for c in (colour, other)
    )
    return WorldSample(
        "mi_same_colour", "multi_image", "Do both images show the same colour?",
        "yes" if same else "no", YES_NO, images=images,
    )


def mi_more_objects(
    rng: np.random.Generator, config: WorldConfig, answer: str | None = None
) -> WorldSample:
    more = ORDINALS.index(answer) if answer else int(rng.integers(2))
    low, high = sorted(int(c) for c in rng.choice(np.arange(1, 5), size=2, replace=False))
    counts = (high, low) if more == 0 else (low, high)
    images = tuple(render_scene(random_scene(rng, config.image_size, n)) for n in counts)
    return WorldSample(
        "mi_more_objects", "multi_image", "Which image has more shapes?", ORDINALS[more],
        ORDINALS[:2], images=images,
    )

