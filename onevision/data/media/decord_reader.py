"""Decode chosen frames of a video with decord, after PyAV has vouched for the file.

decord reads its own frame index on open and seeks to the keyframe before each requested
frame in ``get_batch``; with ``width``/``height`` set, its FFmpeg filter graph scales frames
before the RGB conversion. decord aborts or hangs on some inputs it does not understand, so
the file is first opened with PyAV (:func:`~onevision.data.media.probe.open_video`) and its
packets checked against its header (:func:`~onevision.data.media.integrity.scan_packets`):
only complete files with a video stream FFmpeg can decode, and a frame size, reach decord.
decord's own errors (``DECORDError``, the RuntimeError it raises when opening fails, the
UnicodeEncodeError it raises on a file name that is not UTF-8) and running out of memory
become :class:`MediaError`, which ``load_video`` answers by decoding with PyAV instead.
"""

from __future__ import annotations

import os
import re

import numpy as np

from onevision.data.media.errors import MediaError
from onevision.data.media.integrity import scan_packets
from onevision.data.media.probe import open_video, stream_fps, video_stream
from onevision.data.media.resize import MAX_FRAME_PIXELS, Size, bounded_output_size, exact_resize_applies, resize_exact

try:
    import decord
except ImportError:  # decord has wheels for Linux x86-64 only; PyAV covers the rest.
    decord = None

DECORD_AVAILABLE = decord is not None
"""Whether decord can be imported on this machine."""

# Output widths decord 0.6 cannot copy frames out at ("DECORDArrayCopyFromTo: The size must
# exactly match"), found by scanning widths 2..1400 on this build, stored and scaled alike.
UNSUPPORTED_WIDTHS = frozenset({2, 3, 4, 6, 8, 12, 16, 24, 48, 72})

_DECORD_ERRORS: tuple[type[BaseException], ...] = (
    (decord.DECORDError, RuntimeError, ValueError) if decord is not None else (RuntimeError,)
)


class DecordReader:
    """Random access to the frames of one video file through decord; a context manager.

    Args:
        path: the video file.
        size: output frame size: None (as stored), an int (longest side, never upscaled) or
            (width, height).
        max_pixels: ceiling on width x height of the output frames (None: none).

    Raises:
        MediaError: not a decodable or a truncated video (PyAV's verdict), output frames
            above ``max_pixels``, or decord fails to open it.
        RuntimeError: decord is not installed.
    """

    name = "decord"

    def __init__(
        self, path: str | os.PathLike, size: Size = None, max_pixels: int | None = MAX_FRAME_PIXELS, resample=None
    ) -> None:
        if decord is None:
            raise RuntimeError("decord is not installed; use backend='pyav'")
        self.path = os.fspath(path)
        with open_video(self.path) as container:
            stream = video_stream(container)
            codec = stream.codec_context
            self.width, self.height = codec.width, codec.height
            self.out_size = bounded_output_size(self.path, self.width, self.height, size, max_pixels)
            frames = scan_packets(self.path, container, stream, stream_fps(self.path, stream)).count
        # With a PIL filter, frames come out full size one at a time and PIL resizes them.
        self._exact = exact_resize_applies(self.width, self.height, self.out_size, resample)
        self.resample = resample
        try:
            self.path.encode("utf-8")
        except UnicodeEncodeError:
            raise MediaError(self.path, "decord cannot open a file name that is not UTF-8") from None
        if (self.width if self._exact else self.out_size[0]) in UNSUPPORTED_WIDTHS:
            raise MediaError(
                self.path,
                f"decord cannot return frames {self.out_size[0]} pixels wide (a decord 0.6 bug)",
            )
        scaled = self.out_size != (self.width, self.height) and not self._exact
        try:
            self._reader = decord.VideoReader(
                self.path,
                ctx=decord.cpu(0),
                width=self.out_size[0] if scaled else -1,
                height=self.out_size[1] if scaled else -1,
                num_threads=0,
            )
            self.num_frames = len(self._reader)
            self.fps = float(self._reader.get_avg_fps())
        except _DECORD_ERRORS as error:
            raise MediaError(
                self.path, f"decord cannot open the video: {_first_line(error)}"
            ) from error
        except MemoryError:
            raise MediaError(self.path, "decord ran out of memory opening the video") from None
        if self.num_frames <= 0 or self.fps <= 0:
            raise MediaError(
                self.path, f"decord reports {self.num_frames} frames at {self.fps} fps"
            )
        if self.num_frames != frames:
            # decord builds its own index; on damaged streams it can disagree with the
            # packets, and the plan was made from PyAV's count.
            raise MediaError(
                self.path, f"decord counts {self.num_frames} frames where PyAV counts {frames}"
            )

    def __enter__(self) -> DecordReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the reader."""
        self._reader = None

    def timestamps(self, indices: list[int]) -> list[float]:
        """Presentation time in seconds of each frame, relative to the first frame."""
        times = self._reader.get_frame_timestamp([0, *indices])[:, 0].astype(np.float64)
        return [round(float(t - times[0]), 6) for t in times[1:]]

    def read(self, indices: list[int]) -> np.ndarray:
        """Decode the frames at ``indices`` (any order, repeats allowed): uint8 [F, H, W, 3]."""
        try:
            if self._exact:
                frames = np.stack([resize_exact(self._reader[i].asnumpy(), self.out_size, self.resample) for i in indices])
            else:
                frames = self._reader.get_batch(list(indices)).asnumpy()
        except _DECORD_ERRORS as error:
            raise MediaError(
                self.path, f"decord failed to decode frames: {_first_line(error)}"
            ) from error
        except MemoryError:
            width, height = self.out_size
            raise MediaError(
                self.path, f"decord ran out of memory decoding {len(indices)} frames at {width}x{height}"
            ) from None
        expected = (len(indices), self.out_size[1], self.out_size[0], 3)
        if frames.shape != expected:
            # Without a size request decord returns whatever size the decoder produced; a
            # damaged stream can change it mid-way.
            raise MediaError(
                self.path, f"decord returned frames of shape {frames.shape}, expected {expected}"
            )
        return frames


def _first_line(error: BaseException) -> str:
    """decord's message without its C++ backtrace and its "[time] source.cc:line:" prefix."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", text.splitlines()[0])
