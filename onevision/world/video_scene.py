"""Videos of the synthetic world: objects that move, appear and change colour over time.

A video is a list of frames rendered from tracks. A track is one object with a constant
velocity, a frame at which it appears (it stays until the end) and optionally a frame at
which it takes a new colour. Appearance and colour-change times fall on quarter boundaries
of the clip (`quarter_start`), so any sampler that takes at least 4 evenly spread frames
sees every event in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from onevision.world.scene import MARGIN, WorldObject, radius_for, render_objects

DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
}
"""Unit steps (dx, dy) in image coordinates (y grows downwards)."""
SPEED = 0.1
"""Distance moved per frame, as a fraction of the image side, or less when the clip would
otherwise leave the frame: at 64 px and 8 frames a small object moves 5 px a frame and crosses
35 of the 37 px its centre can travel, so it starts on one side and ends on the other. At 3 px a
frame (0.05) it moved about one pooled video cell over the clip, and direction stayed at chance
even trained alone."""


@dataclass(frozen=True)
class Track:
    """One object over time."""

    obj: WorldObject
    """The object as it is at frame 0 (or where it would be, if it appears later)."""
    velocity: tuple[int, int] = (0, 0)
    """Pixels moved per frame, (dx, dy)."""
    appear: int = 0
    """First frame on which the object is drawn; it stays drawn afterwards."""
    new_colour: str | None = None
    """Colour the object takes from frame `change_at` on, or None."""
    change_at: int = 0
    """First frame drawn in `new_colour` (ignored when `new_colour` is None)."""

    def at(self, frame: int) -> WorldObject | None:
        """The object as drawn on `frame`, or None before it appears."""
        if frame < self.appear:
            return None
        obj = self.obj.moved(self.velocity[0] * frame, self.velocity[1] * frame)
        if self.new_colour is not None and frame >= self.change_at:
            obj = obj.recoloured(self.new_colour)
        return obj


@dataclass(frozen=True)
class VideoScene:
    """A clip: tracks drawn on every frame."""

    tracks: tuple[Track, ...]
    """The tracks, drawn in order."""
    image_size: int
    """Side of each square frame, pixels."""
    frames: int
    """Number of frames."""


def quarter_start(quarter: int, frames: int) -> int:
    """First frame of quarter `quarter` (0..3) of a clip of `frames` frames."""
    if not 0 <= quarter < 4:
        raise ValueError(f"quarter={quarter}: expected 0..3")
    return quarter * frames // 4


def render_video(video: VideoScene) -> list[Image.Image]:
    """`video.frames` RGB frames, each `video.image_size` pixels square."""
    frames = []
    for t in range(video.frames):
        drawn = [obj for obj in (track.at(t) for track in video.tracks) if obj is not None]
        frames.append(render_objects(drawn, video.image_size))
    return frames


def moving_track(
    rng: np.random.Generator,
    image_size: int,
    frames: int,
    direction: str,
    *,
    colour: str,
    shape: str,
    size: str = "small",
) -> Track:
    """A track moving in `direction` at SPEED whose whole path stays inside the frame."""
    dx, dy = DIRECTIONS[direction]
    radius = radius_for(size, image_size)
    margin = max(1, round(MARGIN * image_size))
    lo, hi = margin + radius, image_size - 1 - margin - radius
    # Long clips move slower so the whole path still fits the frame.
    step = max(1, min(round(SPEED * image_size), (hi - lo) // (frames - 1)))
    travel = step * (frames - 1)
    if hi - lo < travel:
        raise ValueError(
            f"a {size} object moving {travel} px does not fit a {image_size} px frame; "
            f"use fewer frames or a larger image"
        )

    def start(unit: int) -> int:
        if unit > 0:
            return int(rng.integers(lo, hi - travel + 1))
        if unit < 0:
            return int(rng.integers(lo + travel, hi + 1))
        return int(rng.integers(lo, hi + 1))

    x, y = start(dx), start(dy)
    return Track(WorldObject(shape, colour, size, x, y, radius), (dx * step, dy * step))
