"""A folder of frame images read as a video.

Some video datasets ship videos as folders of extracted frames. Such a folder counts as a
video whose frames are its image files (.jpg, .jpeg, .png, .bmp, .webp) in natural order
(``frame_2`` before ``frame_10``); other files are ignored. A folder carries no frame rate, so
timestamps assume ``FRAME_FOLDER_FPS`` (1 frame per second, the rate LLaVA-Video extracted
frames at) unless the caller passes another rate.

Every frame must have the first frame's (upright) size, unless an output size is requested,
in which case every frame is resized to the size computed from the first frame.
"""

from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image

from onevision.data.media.errors import MediaError
from onevision.data.media.image import image_size, load_image
from onevision.data.media.resize import MAX_FRAME_PIXELS, Size, bounded_output_size
from onevision.data.media.sampling import frame_timestamps

FRAME_FOLDER_FPS = 1.0
"""Frame rate assumed for a folder of frames (frames per second)."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def list_frames(folder: str | os.PathLike) -> list[str]:
    """Paths of the frame images in ``folder``, naturally sorted; MediaError if there are none."""
    folder = os.fspath(folder)
    names = [
        name
        for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")
    ]
    if not names:
        raise MediaError(folder, f"frame folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    names.sort(key=_natural_key)
    return [os.path.join(folder, name) for name in names]


class FrameFolderReader:
    """Random access to a folder of frames, with the interface of the video readers.

    Args:
        folder: the folder of frame images.
        size: output frame size: None (as stored), an int (longest side, never upscaled) or
            (width, height).
        fps: the frame rate the frames were extracted at.
        max_pixels: ceiling on width x height of the output frames (None: none).

    Raises:
        MediaError: no frame images, the first frame's header is unreadable, or output
            frames above ``max_pixels``.
    """

    name = "frames"

    def __init__(
        self,
        folder: str | os.PathLike,
        size: Size = None,
        fps: float = FRAME_FOLDER_FPS,
        max_pixels: int | None = MAX_FRAME_PIXELS,
        resample=None,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"frame folder fps must be positive, got {fps}")
        self.path = os.fspath(folder)
        self.frames = list_frames(self.path)
        self.num_frames = len(self.frames)
        self.fps = float(fps)
        self.width, self.height = image_size(self.frames[0])
        self.out_size = bounded_output_size(self.path, self.width, self.height, size, max_pixels)
        self._resize = size is not None
        self.resample = Image.Resampling.BICUBIC if resample is None else resample

    def __enter__(self) -> FrameFolderReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release; present for the reader interface."""

    def timestamps(self, indices: list[int]) -> list[float]:
        """Seconds of each frame from the first, at the assumed frame rate."""
        return frame_timestamps(indices, self.fps)

    def read(self, indices: list[int]) -> np.ndarray:
        """Decode the frames at ``indices`` (repeats allowed): uint8 [F, H, W, 3].

        Raises:
            MediaError: a frame cannot be decoded, or differs in size from the first frame
                while no output size was requested.
        """
        decoded: dict[int, np.ndarray] = {}
        for index in sorted(set(indices)):
            image = load_image(self.frames[index])
            if image.size != self.out_size:
                if not self._resize:
                    raise MediaError(
                        self.frames[index],
                        f"frame is {image.size[0]}x{image.size[1]} but the folder's first frame "
                        f"is {self.width}x{self.height}",
                    )
                image = image.resize(self.out_size, self.resample)
            decoded[index] = np.asarray(image)
        return np.stack([decoded[index] for index in indices])


def _natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]
