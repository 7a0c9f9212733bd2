"""Inference requests and their model inputs: media decoded, planned, cut into tiles.

A `Request` is a question (or a whole conversation ending with a question) with its media:
images (paths or PIL images) and/or one video (a path, a `VideoClip`, uint8 frames
[F, H, W, 3] or a list of PIL frames), and options for multiple choice. `MediaLoader.load`
decodes the media, plans the visual tokens with the checkpoint's `VisualSettings`
(`onevision.budget.plan_sample`, budget degrading included) and cuts the pixels per plan
(`onevision.processing`), giving a `LoadedMedia`; a prompt encoder then turns the
conversation into ids with the planned runs (`onevision.infer.prompt`).

Videos are sampled uniformly: `num_frames` frames (default: the settings' `frames_upbound`,
32 for OneVision, as its evaluation does), fewer when the clip is shorter or the budget
asks for fewer (then a uniform subset of the decoded frames is kept).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from onevision.budget import ImageMedia, SamplePlan, VideoMedia, VisualSettings, plan_sample
from onevision.data.media import VideoClip, load_image, load_video, sample_frame_indices
from onevision.data.media.image import to_rgb
from onevision.visual_batch import VisualBatch
from onevision.processing import ImageNormalization, preprocess_item

ImageLike = str | os.PathLike | Image.Image
VideoLike = str | os.PathLike | VideoClip | np.ndarray | Sequence[Image.Image]


@dataclass
class Request:
    """One question for the model and the media it is about."""

    question: str = ""
    """The user's question; placeholders optional (see `onevision.infer.prompt`)."""
    images: Sequence[ImageLike] = ()
    """Images in placeholder order: one (AnyRes) or several (base resolution each)."""
    video: VideoLike | None = None
    """One video: a file or frame folder, a decoded clip, frames [F, H, W, 3] or PIL frames."""
    options: Sequence[str] = ()
    """Answer options, for multiple choice."""
    id: str | None = None
    """Caller's id, carried through to results."""
    turns: Sequence[tuple[str, str]] = ()
    """A whole conversation (role, text) ending with a user turn; replaces `question` when given."""

    def __post_init__(self) -> None:
        if isinstance(self.images, (str, os.PathLike, Image.Image)):
            self.images = [self.images]
        self.images = list(self.images)
        self.options = [str(o) for o in self.options]
        self.turns = [(str(r), str(t)) for r, t in self.turns]
        if not self.turns and not self.question and not self.images and self.video is None:
            raise ValueError("a request needs a question, a conversation or media")

    @classmethod
    def coerce(cls, value: Any) -> "Request":
        """A `Request`, or one built from a dict with keys question/prompt, image/images, video, options, id."""
        if isinstance(value, Request):
            return value
        if isinstance(value, str):
            return cls(question=value)
        if not isinstance(value, dict):
            raise TypeError(f"a request is a Request, a dict or a string, got {type(value).__name__}")
        images = value.get("images", value.get("image")) or ()
        return cls(
            question=value.get("question", value.get("prompt", "")),
            images=images,
            video=value.get("video"),
            options=value.get("options") or (),
            id=None if value.get("id") is None else str(value["id"]),
            turns=value.get("turns") or (),
        )

    def conversation(self, question: str | None = None) -> list[tuple[str, str]]:
        """The turns to prompt with; the last user turn's text replaced by `question` when given."""
        turns = list(self.turns) or [("user", self.question)]
        if question is not None:
            turns[-1] = (turns[-1][0], question)
        return turns

    def describe(self) -> str:
        """Short name for messages: the id, else the media."""
        if self.id is not None:
            return str(self.id)
        if self.video is not None and isinstance(self.video, (str, os.PathLike)):
            return os.fspath(self.video)
        paths = [os.fspath(i) for i in self.images if isinstance(i, (str, os.PathLike))]
        return ", ".join(paths) or "<in-memory request>"


@dataclass
class LoadedMedia:
    """A request's media, decoded and cut into tiles per plan."""

    plan: SamplePlan
    """The items' plans in placeholder order (images first, then the video)."""
    visual: VisualBatch | None
    """Tiles and plans for the model; None for a text-only request."""
    timestamps: list[float] = field(default_factory=list)
    """Seconds of each kept video frame (empty without a video or timing)."""
    duration: float = 0.0
    """Seconds of the source video (0 without one)."""
    seconds: float = 0.0
    """Wall time spent decoding and cutting tiles."""


class MediaLoader:
    """Decodes and plans media with one checkpoint's visual settings.

    Args:
        settings: visual token settings (the checkpoint's `config.visual` by default).
        normalization: mean/std/filter of the checkpoint's vision tower.
        num_frames: frames sampled uniformly per video (it replaces `settings.frames_upbound`,
            the cap the planner applies); None keeps `settings.frames_upbound`.
        video_backend: 'auto', 'decord' or 'pyav'.
        dtype: floating dtype of the tiles (the model's).
    """

    def __init__(
        self,
        settings: VisualSettings,
        normalization: ImageNormalization = ImageNormalization(),
        num_frames: int | None = None,
        video_backend: str = "auto",
        dtype: torch.dtype = torch.float32,
    ):
        if num_frames:  # an explicit frame count replaces the checkpoint's cap
            settings = dataclasses.replace(settings, frames_upbound=num_frames)
        self.settings = settings
        self.normalization = normalization
        self.num_frames = settings.frames_upbound
        self.video_backend = video_backend
        self.dtype = dtype

    def load(self, request: Request) -> LoadedMedia:
        """Decode, plan and cut the media of `request`.

        Raises:
            MediaError: a file cannot be decoded (the message names it).
            BudgetError: the media cannot fit the settings' visual budget.
        """
        start = time.perf_counter()
        images = [self._image(image) for image in request.images]
        frames, timestamps, duration = (None, [], 0.0) if request.video is None else self._video(request.video)
        media: list = [ImageMedia(*image.size) for image in images]
        if frames is not None:
            media.append(VideoMedia(len(frames)))
        plan = plan_sample(media, self.settings)
        if frames is not None and plan.items[-1].frames < len(frames):
            keep = sample_frame_indices(len(frames), 1.0, num_frames=plan.items[-1].frames)
            frames = frames[keep]
            timestamps = [timestamps[k] for k in keep] if timestamps else []
        tiles = [
            preprocess_item(item_media, item, self.settings.image_size, self.normalization)
            for item_media, item in zip([*images, *([] if frames is None else [frames])], plan.items)
        ]
        visual = VisualBatch(torch.cat(tiles).to(self.dtype), list(plan.items)) if tiles else None
        return LoadedMedia(plan, visual, timestamps, duration, time.perf_counter() - start)

    @staticmethod
    def _image(image: ImageLike) -> Image.Image:
        if isinstance(image, Image.Image):
            return to_rgb(image)
        return load_image(image)

    def _video(self, video: VideoLike) -> tuple[np.ndarray, list[float], float]:
        """uint8 frames [F, H, W, 3], their timestamps and the clip's duration."""
        if isinstance(video, (str, os.PathLike)):
            # Frames are resized straight to S x S later; decoding them at that size with the
            # same PIL filter gives the same pixels and never holds the clip at full size.
            side = self.settings.image_size
            video = load_video(video, num_frames=self.num_frames, backend=self.video_backend,
                               size=(side, side), resample=self.normalization.pil_filter)
        if isinstance(video, VideoClip):
            return video.frames, list(video.timestamps), video.duration
        if isinstance(video, (list, tuple)) and video and isinstance(video[0], Image.Image):
            video = np.stack([np.asarray(to_rgb(frame)) for frame in video])
        frames = np.asarray(video)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
            raise ValueError(f"video frames must be uint8 [F, H, W, 3] with F >= 1, got {frames.dtype} {frames.shape}")
        if len(frames) > self.num_frames:
            frames = frames[sample_frame_indices(len(frames), 1.0, num_frames=self.num_frames)]
        return frames, [], 0.0
