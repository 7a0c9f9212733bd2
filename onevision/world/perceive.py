"""Reading the world back from pixels: objects found by colour segmentation.

Used to check that rendered (and JPEG- or H.264-compressed) media still carry the answers
the generators claim, and as a pixel oracle for the tasks. Every pixel takes the nearest of
the background and palette colours; pixels of one colour that touch (4-neighbourhood) form a
blob; blobs smaller than a fraction of the smallest object are compression debris. Shape is
read from how much of its bounding box a blob fills and where its mass sits vertically
(a triangle points up, so its centroid lies below the box centre).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from onevision.world.scene import BACKGROUND, COLOURS, quadrant_at, radius_for

_REFERENCE = np.array([BACKGROUND, *COLOURS.values()], dtype=np.float32)
_NAMES = ("background", *COLOURS)


@dataclass(frozen=True)
class Blob:
    """One object found in an image."""

    colour: str
    """Nearest palette colour."""
    area: int
    """Pixels."""
    x: float
    """Centroid column."""
    y: float
    """Centroid row."""
    bbox: tuple[int, int, int, int]
    """(x0, y0, x1, y1), inclusive."""
    shape: str
    """Best guess among SHAPES."""

    def quadrant(self, image_size: int) -> str:
        return quadrant_at(self.x, self.y, image_size)


def colour_labels(pixels: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [H, W] int: 0 background, i >= 1 the i-th palette colour."""
    diff = pixels[:, :, None, :].astype(np.float32) - _REFERENCE[None, None]
    return np.argmin((diff * diff).sum(-1), axis=-1)


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components of a boolean [H, W] mask -> (labels [H, W], count); label 0 is
    outside the mask, components are numbered 1..count in raster order of their first pixel."""
    h, w = mask.shape
    big = h * w
    labels = np.where(mask, np.arange(big).reshape(h, w), big)
    while True:
        # Each pass hands every pixel the smallest label among its masked neighbours.
        new = labels.copy()
        np.minimum(new[1:], labels[:-1], out=new[1:])
        np.minimum(new[:-1], labels[1:], out=new[:-1])
        np.minimum(new[:, 1:], labels[:, :-1], out=new[:, 1:])
        np.minimum(new[:, :-1], labels[:, 1:], out=new[:, :-1])
        new = np.where(mask, new, big)
        if np.array_equal(new, labels):
            break
        labels = new
    roots = np.unique(labels[mask])
    relabelled = np.zeros((h, w), dtype=np.int32)
    relabelled[mask] = np.searchsorted(roots, labels[mask]) + 1
    return relabelled, len(roots)


def classify_shape(mask: np.ndarray) -> str:
    """Shape of the single blob in boolean `mask` (cropped to its bounding box or not)."""
    ys, xs = np.nonzero(mask)
    height, width = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = len(ys) / (height * width)
    drop = (ys.mean() - (ys.min() + ys.max()) / 2) / height
    if fill >= 0.9:
        return "square"
    if fill >= 0.68:
        return "circle"
    return "triangle" if drop > 0.08 else "cross"


def find_objects(image: Image.Image | np.ndarray, *, min_area: int | None = None) -> list[Blob]:
    """Objects in an RGB image (PIL or [H, W, 3] uint8), sorted by the top, then left, of their box.

    `min_area` defaults to a quarter of the smallest object's bounding box.
    """
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    size = pixels.shape[1]
    if min_area is None:
        min_area = (2 * radius_for("small", size) + 1) ** 2 // 4
    classes = colour_labels(pixels)
    blobs = []
    for index in range(1, len(_NAMES)):
        labels, count = connected_components(classes == index)
        for k in range(1, count + 1):
            mask = labels == k
            area = int(mask.sum())
            if area < min_area:
                continue
            ys, xs = np.nonzero(mask)
            blobs.append(Blob(
                _NAMES[index], area, float(xs.mean()), float(ys.mean()),
                (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())), classify_shape(mask),
            ))
    return sorted(blobs, key=lambda b: (b.bbox[1], b.bbox[0]))
