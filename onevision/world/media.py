"""Writing the world's media: PNG and JPEG images, H.264 mp4 videos through PyAV.

Videos are H.264 in yuv420p (what every decoder reads, decord included) with crf 0, which is
lossless in YUV: colours come back within a few levels of the palette, apart from the 2x2
chroma blur on object edges. One encoder thread and no timestamps in the container keep the
files byte-identical from run to run.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image


def write_image(image: Image.Image, path: Path, *, jpeg_quality: int = 95) -> None:
    """Write `image` as PNG or JPEG, chosen by the suffix of `path`."""
    suffix = path.suffix.lower()
    if suffix == ".png":
        image.save(path, format="PNG")
    elif suffix in (".jpg", ".jpeg"):
        # 4:4:4 chroma: no colour bleeding across object edges.
        image.save(path, format="JPEG", quality=jpeg_quality, subsampling=0)
    else:
        raise ValueError(f"{path}: images are written as .png or .jpg, not {suffix!r}")


def write_video(
    frames: list[Image.Image] | tuple[Image.Image, ...], path: Path, *, fps: int = 1
) -> None:
    """Encode RGB `frames` (all the same even width and height) as an H.264 mp4 at `path`."""
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    width, height = frames[0].size
    if width % 2 or height % 2:
        raise ValueError(f"{path}: yuv420p needs even frame sizes, got {width}x{height}")
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        stream.codec_context.thread_count = 1
        for i, frame in enumerate(frames):
            if frame.size != (width, height):
                raise ValueError(f"{path}: frame {i} is {frame.size}, frame 0 is {(width, height)}")
            pixels = np.asarray(frame.convert("RGB"))
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_video(path: Path | str) -> list[np.ndarray]:
    """Decode every frame of `path` as an RGB uint8 array [H, W, 3]."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
