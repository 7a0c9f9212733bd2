"""Scenes of flat shapes and their rendering: the pixels of the synthetic world.

A scene is a few objects on a dark background. Each object has a colour (4, far apart in
RGB), a shape (circle, square, triangle, cross), a size (small or large) and sits wholly
inside one quadrant of the image, so objects never touch and every attribute a question asks
about can be recovered from the pixels (see `onevision.world.perceive`). Geometry is given as
fractions of the image side, so the same scene logic works at 64 px or 384 px.

Rendering uses PIL's aliased drawing: every foreground pixel of a PNG is exactly one palette
colour. Sampling helpers take a `numpy.random.Generator`, so a scene is a pure function of the
generator's state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Palette: far apart in RGB so they survive JPEG, yuv420p video and 8 px patches.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 70),
    "blue": (50, 90, 235),
    "yellow": (240, 210, 40),
}
BACKGROUND: tuple[int, int, int] = (16, 16, 16)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SIZES: dict[str, float] = {"small": 0.15, "large": 0.19}
"""Half side of an object's bounding box, as a fraction of the image side. At 64 px a small
object spans 21 px, under three 8 px patches: at 0.11 (15 px, two patches) linear probes on the
demo tower's features read a small object's shape 41-54% of the time against 73-100% for a large
one (chance 25%; `scripts/world_probe.py`), and the demo's model never learnt the shape task."""
QUADRANTS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
MARGIN = 0.04
"""Gap kept between an object and its quadrant's border, as a fraction of the image side."""


@dataclass(frozen=True)
class WorldConfig:
    """How the world's media are rendered and stored."""

    image_size: int = 64
    """Side of every square image and video frame, in pixels."""
    frames: int = 8
    """Frames per video (at least 4: appearance times are quarters of the clip)."""
    jpeg_fraction: float = 0.5
    """Share of images written as JPEG; the rest are PNG."""
    jpeg_quality: int = 95
    """JPEG quality (4:4:4 chroma, so colour edges stay sharp)."""
    video_fps: int = 1
    """Frame rate stored in the mp4 files: 1 fps, so LLaVA's default 1-fps frame sampling
    takes every frame."""

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"WorldConfig.image_size={self.image_size}: need at least 32 px")
        if self.frames < 4:
            raise ValueError(f"WorldConfig.frames={self.frames}: need at least 4 frames")
        if not 0.0 <= self.jpeg_fraction <= 1.0:
            raise ValueError(f"WorldConfig.jpeg_fraction={self.jpeg_fraction}: not in [0, 1]")


@dataclass(frozen=True)
class WorldObject:
    """One shape in pixel coordinates: centre (x, y), half side `radius`."""

    shape: str
    """One of SHAPES."""
    colour: str
    """One of COLOURS."""
    size: str
    """One of SIZES ("small" or "large")."""
    x: int
    """Centre column, pixels from the left."""
    y: int
    """Centre row, pixels from the top."""
    radius: int
    """Half side of the bounding box, pixels."""

    def quadrant(self, image_size: int) -> str:
        """The quadrant holding the centre, one of QUADRANTS."""
        return quadrant_at(self.x, self.y, image_size)

    def moved(self, dx: int, dy: int) -> WorldObject:
        return WorldObject(
            self.shape, self.colour, self.size, self.x + dx, self.y + dy, self.radius
        )

    def recoloured(self, colour: str) -> WorldObject:
        return WorldObject(self.shape, colour, self.size, self.x, self.y, self.radius)


@dataclass(frozen=True)
class Scene:
    """A still image: objects drawn in order on the background."""

    objects: tuple[WorldObject, ...]
    """The objects, at most one per quadrant."""
    image_size: int
    """Side of the square image, pixels."""


def quadrant_at(x: float, y: float, image_size: int) -> str:
    """Name of the quadrant that holds pixel (x, y)."""
    half = image_size / 2
    return QUADRANTS[(2 if y >= half else 0) + (1 if x >= half else 0)]


def radius_for(size: str, image_size: int) -> int:
    """Half side in pixels of an object of `size` ("small" | "large")."""
    return max(3, round(SIZES[size] * image_size))


def draw_object(draw: ImageDraw.ImageDraw, obj: WorldObject) -> None:
    """Draw `obj` with its flat palette colour (no anti-aliasing)."""
    fill = COLOURS[obj.colour]
    x, y, r = obj.x, obj.y, obj.radius
    if obj.shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fill)
    elif obj.shape == "cross":
        arm = max(1, round(r / 3))
        draw.rectangle((x - arm, y - r, x + arm, y + r), fill=fill)
        draw.rectangle((x - r, y - arm, x + r, y + arm), fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; expected one of {SHAPES}")


def render_objects(
    objects: tuple[WorldObject, ...] | list[WorldObject], image_size: int
) -> Image.Image:
    """RGB image of side `image_size` with `objects` drawn in order."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for obj in objects:
        draw_object(draw, obj)
    return image


def render_scene(scene: Scene) -> Image.Image:
    """RGB PIL image of `scene`, `scene.image_size` pixels square."""
    return render_objects(scene.objects, scene.image_size)


def place_in_quadrant(
    rng: np.random.Generator, quadrant: str, radius: int, image_size: int
) -> tuple[int, int]:
    """A random centre that keeps a box of half side `radius` inside `quadrant` with a margin."""
    half = image_size // 2
    margin = max(1, round(MARGIN * image_size))
    row, col = divmod(QUADRANTS.index(quadrant), 2)
    lo, hi = margin + radius, half - 1 - margin - radius
    if hi < lo:
        raise ValueError(
            f"an object of half side {radius} px does not fit a {half} px quadrant "
            f"with a {margin} px margin (image_size={image_size})"
        )
    x = col * half + int(rng.integers(lo, hi + 1))
    y = row * half + int(rng.integers(lo, hi + 1))
    return x, y


def random_object(
    rng: np.random.Generator,
    image_size: int,
    quadrant: str,
    *,
    colour: str | None = None,
    shape: str | None = None,
    size: str | None = None,
) -> WorldObject:
    """An object in `quadrant`; attributes not given are drawn uniformly."""
    colour = colour if colour is not None else str(rng.choice(list(COLOURS)))
    shape = shape if shape is not None else str(rng.choice(SHAPES))
    size = size if size is not None else str(rng.choice(list(SIZES)))
    radius = radius_for(size, image_size)
    x, y = place_in_quadrant(rng, quadrant, radius, image_size)
    return WorldObject(shape, colour, size, x, y, radius)


def random_quadrants(rng: np.random.Generator, count: int) -> list[str]:
    """`count` distinct quadrants in random order."""
    if not 1 <= count <= len(QUADRANTS):
        raise ValueError(f"count={count}: a scene holds 1 to {len(QUADRANTS)} objects")
    return [QUADRANTS[i] for i in rng.permutation(len(QUADRANTS))[:count]]


def random_scene(
    rng: np.random.Generator,
    image_size: int,
    count: int,
    *,
    colours: list[str] | None = None,
) -> Scene:
    """`count` objects in distinct quadrants; `colours` fixes their colours in order."""
    if colours is not None and len(colours) != count:
        raise ValueError(f"random_scene: {len(colours)} colours given for {count} objects")
    objects = tuple(
        random_object(rng, image_size, quadrant, colour=None if colours is None else colours[i])
        for i, quadrant in enumerate(random_quadrants(rng, count))
    )
    return Scene(objects, image_size)
