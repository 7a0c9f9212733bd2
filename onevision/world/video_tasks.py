"""Question generators over videos: motion, appearance order, counting over time, colour change.

As for the image tasks, each generator takes the answer it is asked for (or draws one
uniformly when given None), builds a clip that has that answer, then renders its frames.
Signature: `(rng, config, answer=None) -> WorldSample`. Events happen on quarter boundaries
of the clip (`quarter_start`), so four evenly spread frames are enough to answer every
question.
"""

from __future__ import annotations

import numpy as np

from onevision.world.image_tasks import COLOUR_CHOICES, COUNT_CHOICES
from onevision.world.sample import WorldSample
from onevision.world.scene import QUADRANTS, SHAPES, WorldConfig, random_object, random_quadrants
from onevision.world.video_scene import (
    DIRECTIONS,
    Track,
    VideoScene,
    moving_track,
    quarter_start,
    render_video,
)

DIRECTION_CHOICES = tuple(DIRECTIONS)


def _pick(rng: np.random.Generator, options) -> str:
    return str(options[int(rng.integers(len(options)))])


def _video_sample(task: str, question: str, answer: str, choices, video: VideoScene) -> WorldSample:
    frames = tuple(render_video(video))
    return WorldSample(task, "video", question, answer, tuple(choices), frames=frames)


def vid_direction(
    rng: np.random.Generator, config: WorldConfig, answer: str | None = None
) -> WorldSample:
    direction = answer or _pick(rng, DIRECTION_CHOICES)
    track = moving_track(
        rng, config.image_size, config.frames, direction,
        colour=_pick(rng, COLOUR_CHOICES), shape=_pick(rng, SHAPES),
    )
    video = VideoScene((track,), config.image_size, config.frames)
    return _video_sample(
        "vid_direction", "Which way does the shape move?", direction, DIRECTION_CHOICES, video
    )


def vid_first_colour(
    rng: np.random.Generator, config: WorldConfig, answer: str | None = None
) -> WorldSample:
    count = int(rng.integers(2, 4))
    first = answer or _pick(rng, COLOUR_CHOICES)
    others = rng.permutation([c for c in COLOUR_CHOICES if c != first])[: count - 1]
    colours = [first] + [str(c) for c in others]
    quarters = sorted(int(q) for q in rng.choice(4, size=count, replace=False))
    tracks = tuple(
        Track(random_object(rng, config.image_size, quadrant, colour=colour),
              appear=quarter_start(quarter, config.frames))
        for colour, quarter, quadrant in zip(colours, quarters, random_quadrants(rng, count))
    )
    video = VideoScene(tracks, config.image_size, config.frames)
    return _video_sample(
        "vid_first_colour", "Which colour appears first?", colours[0], COLOUR_CHOICES, video
    )


def vid_count(
    rng: np.random.Generator, config: WorldConfig, answer: str | None = None
) -> WorldSample:
    # Objects arrive at random quarters and stay, so the count is of everything that appears.
    count = int(answer or rng.integers(1, 5))
    tracks = tuple(
        Track(random_object(rng, config.image_size, quadrant),
              appear=quarter_start(int(rng.integers(4)), config.frames))
        for quadrant in random_quadrants(rng, count)
    )
    video = VideoScene(tracks, config.image_size, config.frames)
    return _video_sample(
        "vid_count", "How many shapes appear in the video?", str(count), COUNT_CHOICES, video
    )


def vid_colour_change(
    rng: np.random.Generator, config: WorldConfig, answer: str | None = None
) -> WorldSample:
    new_colour = answer or _pick(rng, COLOUR_CHOICES)
    old_colour = _pick(rng, [c for c in COLOUR_CHOICES if c != new_colour])
    obj = random_object(rng, config.image_size, _pick(rng, QUADRANTS), colour=old_colour)
    track = Track(
        obj, new_colour=new_colour, change_at=quarter_start(int(rng.integers(1, 4)), config.frames)
    )
    video = VideoScene((track,), config.image_size, config.frames)
    return _video_sample(
        "vid_colour_change", f"What colour does the {obj.shape} turn into?", new_colour,
        COLOUR_CHOICES, video,
    )
