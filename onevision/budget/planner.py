"""Plan a sample's visual tokens before any pixel is decoded.

`plan_sample(media, settings)` turns a sample's media (image sizes, video frame counts) and the
visual settings into a `SamplePlan`: one item plan per image or video, in placeholder order,
each with its exact token count and the geometry the encoder needs to produce exactly that
many tokens (the model lays out features from the plan, so plan and output cannot drift).

Scenarios (arXiv 2408.03326, Sec. 3; docs/architecture.md, "Visual token budget"):
- one image in the sample: AnyRes-Max-N crops, unpadded, downscaled, one newline per row;
  base (side^2) + h*w + h tokens (or, with `single_image='base'`, as one image of a set: the
  stage-1 alignment input);
- several images: base resolution each, side^2 + 1 newline tokens per image (730 for SigLIP-384);
- video: every frame at base resolution, pooled to pooled_side^2 tokens (bilinear resize to
  ceil(side/stride), or average / max pooling over stride x stride windows, floor(side/stride),
  as LLaVA-NeXT's `mm_spatial_pool_mode`), newlines by policy: one per video (default, as
  transformers), per frame, per row, or none.

Settings that only the original LLaVA-NeXT code uses (`video_pool_mode` 'average'/'max',
`unpad_rounding='truncate'`, `base_image='stretch'`) are plan settings too, so a checkpoint in
that layout gets token counts known before decoding that equal what its model produces.

Budget: when `settings.max_visual_tokens` is set and a sample exceeds it, the plan degrades in
this order and takes the first candidate that fits, never cutting an item's tokens:
  1. fewer video frames (down to `min_frames`),
  2. stronger video pooling (stride up to `max_pool_stride`, frames retried from the top),
  3. smaller N for the single AnyRes image (down to `min_anyres_max`, video retried as above).
If nothing fits, `BudgetError` names the smallest count reached and the budget.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence, Union

from onevision.budget.anyres import (
    default_grid_pinpoints,
    downscaled_shape,
    select_best_resolution,
    unpadded_shape,
)

VIDEO_NEWLINE_POLICIES = ("video", "frame", "row", "none")
VIDEO_POOL_MODES = ("bilinear", "average", "max")
UNPAD_ROUNDINGS = ("round", "truncate")
BASE_IMAGE_MODES = ("pad", "stretch", "crop")


class BudgetError(ValueError):
    """A sample's visual tokens cannot fit its budget, even fully degraded."""


@dataclass(frozen=True)
class VisualSettings:
    """How media become visual tokens; serialised as the `visual:` block of configs."""

    image_size: int = 384
    """Side of the vision tower's input and of every AnyRes crop, in pixels."""
    patch_size: int = 14
    """Vision tower patch size in pixels; image_size // patch_size patches per side (27 for 384/14)."""
    anyres_max: int = 9
    """N of AnyRes-Max-N: a single image's crop features are shrunk to at most ~N crops."""
    max_grid: int = 6
    """Largest crop grid side used to build the default grid pinpoints (6 -> 36 pinpoints)."""
    grid_pinpoints: tuple[tuple[int, int], ...] | None = None
    """Explicit (height, width) pinpoints; None means all multiples of image_size up to max_grid."""
    video_pool_stride: int = 2
    """Pooling stride for video frames: side -> ceil(side / stride) per axis for 'bilinear',
    floor(side / stride) for 'average' and 'max'."""
    video_pool_mode: str = "bilinear"
    """Video frame pooling: 'bilinear' (transformers; LLaVA-NeXT's default), 'average' or 'max'
    (stride x stride windows, LLaVA-NeXT `mm_spatial_pool_mode`, as LLaVA-Video is evaluated)."""
    video_newline: str = "video"
    """Video newlines: 'video' (one per video), 'frame', 'row' (LLaVA-Video grid) or 'none'."""
    frames_upbound: int = 32
    """Most frames sampled from one video."""
    max_visual_tokens: int | None = None
    """Per-sample ceiling on visual tokens; None disables degrading."""
    min_frames: int = 4
    """Degrading never samples fewer video frames than this (or than the video has)."""
    max_pool_stride: int = 4
    """Strongest video pooling stride degrading may use."""
    min_anyres_max: int = 1
    """Smallest N degrading may use for a single AnyRes image."""
    single_image: str = "anyres"
    """A lone image: 'anyres' (AnyRes-Max-N crops) or 'base' (padded square, side^2 + 1 newline,
    the official stage-1 input)."""
    unpad_rounding: str = "round"
    """Unpadding of the AnyRes feature map: 'round' (transformers, int(round(x, 7))) or 'truncate'
    (LLaVA-NeXT's `unpad_image`, int(x)); 369x820 at AnyRes-Max-9 gives 2437 vs 2381 tokens."""
    base_image: str = "pad"
    """An image at base resolution (multi-image items, single_image='base'): 'pad' to a square with
    the mean colour, then resize, or 'stretch' (resized straight; LLaVA-NeXT image_aspect_ratio
    'square'), or 'crop' (shortest side resized to image_size, then centre-cropped: LLaVA v1,
    transformers' CLIPImageProcessor)."""
    image_newline: bool = True
    """Items carry `image_newline` tokens; False (LLaVA v1 / 1.5): an image is its base tokens only,
    so single_image must be 'base' and video_newline 'none'. Follows the model (ModelConfig.use_image_newline)."""
    class_token: bool = False
    """The tower's class token is one of an image's tokens (CLIP with strategy 'full'): side^2 + 1
    per image; no AnyRes and no video then. Follows the model (ModelConfig)."""

    def __post_init__(self) -> None:
        if self.grid_pinpoints is not None:
            pins = tuple(tuple(int(v) for v in p) for p in self.grid_pinpoints)
            object.__setattr__(self, "grid_pinpoints", pins)
        if self.image_size < self.patch_size:
            raise ValueError(f"image_size {self.image_size} is smaller than patch_size {self.patch_size}")
        if self.single_image not in ("anyres", "base"):
            raise ValueError(f"single_image must be 'anyres' or 'base', got {self.single_image!r}")
        for name, allowed in (
            ("video_newline", VIDEO_NEWLINE_POLICIES),
            ("video_pool_mode", VIDEO_POOL_MODES),
            ("unpad_rounding", UNPAD_ROUNDINGS),
            ("base_image", BASE_IMAGE_MODES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("anyres_max", "max_grid", "video_pool_stride", "frames_upbound", "min_frames", "min_anyres_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.image_newline and (self.single_image != "base" or self.video_newline != "none"):
            raise ValueError(
                "image_newline=False (a model without a newline vector) needs single_image='base' and "
                f"video_newline='none', got single_image={self.single_image!r}, video_newline={self.video_newline!r}"
            )
        if self.class_token and self.single_image != "base":
            raise ValueError("class_token=True (CLIP 'full' features) needs single_image='base': AnyRes maps have no class token")
        if self.max_visual_tokens is not None and self.max_visual_tokens < 1:
            raise ValueError(f"max_visual_tokens must be positive or None, got {self.max_visual_tokens}")

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def base_tokens(self) -> int:
        """Tokens of one base view: side^2 patches, plus the class token when kept."""
        return self.patches_per_side**2 + int(self.class_token)

    def pinpoints(self) -> list[tuple[int, int]]:
        if self.grid_pinpoints is not None:
            return list(self.grid_pinpoints)
        return default_grid_pinpoints(self.image_size, self.max_grid)

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.grid_pinpoints is not None:
            out["grid_pinpoints"] = [list(p) for p in self.grid_pinpoints]
        return out


@dataclass(frozen=True)
class ImageMedia:
    """An image known by its size only (width x height, as image tools write it)."""

    width: int
    height: int


@dataclass(frozen=True)
class VideoMedia:
    """A video known by the number of frames it can deliver (after fps sampling, if any)."""

    frames: int


@dataclass(frozen=True)
class AnyResPlan:
    """A single image: base view plus AnyRes crops, unpadded, downscaled, newline per row."""

    width: int
    height: int
    anyres_max: int
    best_resolution: tuple[int, int]
    """(height, width) the image is resized and padded into before cropping."""
    grid: tuple[int, int]
    """(rows, cols) of image_size crops."""
    feature_shape: tuple[int, int]
    """(height, width) of the stitched crop feature map."""
    unpadded: tuple[int, int]
    """(height, width) kept after removing padding."""
    offset: tuple[int, int]
    """(top, left) of the kept window in the stitched map."""
    pooled: tuple[int, int]
    """(height, width) after the AnyRes-Max-N bilinear downscale (== unpadded if none)."""
    base_tokens: int
    kind: str = field(default="image", init=False)

    @property
    def num_tiles(self) -> int:
        """Images fed to the vision tower: the base view then the crops, row-major."""
        return 1 + self.grid[0] * self.grid[1]

    @property
    def tokens(self) -> int:
        return self.base_tokens + self.pooled[0] * self.pooled[1] + self.pooled[0]


@dataclass(frozen=True)
class BaseImagePlan:
    """One image at base resolution (an image of a set, or a lone one with single_image='base'), then a newline if any."""

    width: int
    height: int
    base_tokens: int
    fill: str = "pad"
    """How the image becomes a square: 'pad' (mean colour, then resize), 'stretch' or 'crop' (shortest side, centre crop)."""
    newline: bool = True
    """One `image_newline` token follows the base tokens (False: LLaVA v1 / 1.5)."""
    kind: str = field(default="multi_image", init=False)

    @property
    def num_tiles(self) -> int:
        return 1

    @property
    def tokens(self) -> int:
        return self.base_tokens + int(self.newline)


@dataclass(frozen=True)
class VideoPlan:
    """A video: `frames` frames at base resolution, each pooled to `pooled_side`^2 tokens."""

    frames: int
    source_frames: int
    pool_stride: int
    pooled_side: int
    newline: str
    pool_mode: str = "bilinear"
    """'bilinear' (resize to pooled_side), 'average' or 'max' (pool_stride windows)."""
    kind: str = field(default="video", init=False)

    @property
    def num_tiles(self) -> int:
        return self.frames

    @property
    def tokens(self) -> int:
        per_frame = self.pooled_side * self.pooled_side
        if self.newline == "video":
            return per_frame * self.frames + 1
        if self.newline == "frame":
            return (per_frame + 1) * self.frames
        if self.newline == "row":
            return (self.pooled_side + 1) * self.pooled_side * self.frames
        return per_frame * self.frames


ItemPlan = Union[AnyResPlan, BaseImagePlan, VideoPlan]


@dataclass(frozen=True)
class SamplePlan:
    """The visual tokens of one sample, item by item in placeholder order."""

    items: tuple[ItemPlan, ...]
    budget: int | None = None
    degraded: tuple[str, ...] = ()
    """What was given up to fit the budget, in the order applied (empty if nothing)."""

    @property
    def total(self) -> int:
        return sum(item.tokens for item in self.items)

    @property
    def scenario(self) -> str:
        kinds = [item.kind for item in self.items]
        if not kinds:
            return "text"
        if "video" in kinds:
            return "video"
        return "multi_image" if len(kinds) > 1 else "single_image"

    def to_dict(self) -> dict:
        items = []
        for item in self.items:
            entry = {"kind": item.kind, "tokens": item.tokens, "num_tiles": item.num_tiles}
            entry.update({k: v for k, v in asdict(item).items() if k != "kind"})
            items.append(entry)
        return {
            "total": self.total,
            "scenario": self.scenario,
            "budget": self.budget,
            "degraded": list(self.degraded),
            "items": items,
        }


def plan_anyres(width: int, height: int, settings: VisualSettings, anyres_max: int | None = None) -> AnyResPlan:
    """Plan one single-scenario image of `width` x `height` pixels."""
    _check_size(width, height)
    n = settings.anyres_max if anyres_max is None else anyres_max
    side = settings.patches_per_side
    best = select_best_resolution((height, width), settings.pinpoints())
    grid = (best[0] // settings.image_size, best[1] // settings.image_size)
    feature_shape = (grid[0] * side, grid[1] * side)
    kept, offset = unpadded_shape((height, width), feature_shape, settings.unpad_rounding)
    return AnyResPlan(
        width=width,
        height=height,
        anyres_max=n,
        best_resolution=best,
        grid=grid,
        feature_shape=feature_shape,
        unpadded=kept,
        offset=offset,
        pooled=downscaled_shape(kept, n, side),
        base_tokens=side * side,
    )


def plan_video(frames: int, settings: VisualSettings, *, cap: int | None = None, stride: int | None = None) -> VideoPlan:
    """Plan a video that can deliver `frames` frames, sampling at most `cap` of them."""
    if frames < 1:
        raise ValueError(f"a video needs at least one frame, got {frames}")
    if settings.class_token:
        raise ValueError("video frames are pooled as patch maps; a model whose features keep the class token (CLIP 'full') takes no video")
    stride = settings.video_pool_stride if stride is None else stride
    cap = settings.frames_upbound if cap is None else cap
    side = settings.patches_per_side
    # bilinear resizes to ceil(side / stride); avg/max_pool2d (kernel = stride, no padding) floor.
    pooled = math.ceil(side / stride) if settings.video_pool_mode == "bilinear" else side // stride
    if pooled < 1:
        raise BudgetError(f"{settings.video_pool_mode} pooling with stride {stride} leaves nothing of a {side}x{side} frame map")
    return VideoPlan(
        frames=min(frames, cap),
        source_frames=frames,
        pool_stride=stride,
        pooled_side=pooled,
        newline=settings.video_newline,
        pool_mode=settings.video_pool_mode,
    )


def plan_sample(media: Sequence[ImageMedia | VideoMedia], settings: VisualSettings) -> SamplePlan:
    """Plan every visual item of one sample, degrading to fit `settings.max_visual_tokens`.

    Args:
        media: the sample's images and videos in placeholder order. Exactly one image (with
            or without videos) gets AnyRes; two or more images are each planned at base size.
        settings: visual settings, including the per-sample budget.

    Raises:
        BudgetError: the sample cannot fit its budget even fully degraded.
    """
    budget = settings.max_visual_tokens
    candidates = _candidates(media, settings)
    first, _ = next(candidates)
    if budget is None or first.total <= budget:
        return SamplePlan(first.items, budget=budget)
    smallest = first
    for plan, steps in candidates:
        if plan.total <= budget:
            return SamplePlan(plan.items, budget=budget, degraded=steps)
        smallest = min(smallest, plan, key=lambda p: p.total)
    raise BudgetError(
        f"sample needs {first.total} visual tokens, over the budget of {budget}; fully degraded "
        f"(fewest frames, strongest pooling, smallest N) it still needs {smallest.total}: "
        + ", ".join(f"{item.kind}={item.tokens}" for item in smallest.items)
    )


def _candidates(media: Sequence[ImageMedia | VideoMedia], settings: VisualSettings) -> Iterator[tuple[SamplePlan, tuple[str, ...]]]:
    """Every plan the budget may fall back to, best first, with the steps taken."""
    images = [m for m in media if isinstance(m, ImageMedia)]
    videos = [m for m in media if isinstance(m, VideoMedia)]
    unknown = [m for m in media if not isinstance(m, (ImageMedia, VideoMedia))]
    if unknown:
        raise TypeError(f"media must be ImageMedia or VideoMedia, got {type(unknown[0]).__name__}")
    single = len(images) == 1 and settings.single_image == "anyres"

    n_levels = range(settings.anyres_max, min(settings.min_anyres_max, settings.anyres_max) - 1, -1) if single else [settings.anyres_max]
    stride_levels = range(settings.video_pool_stride, max(settings.max_pool_stride, settings.video_pool_stride) + 1) if videos else [settings.video_pool_stride]
    most_frames = min(max((v.frames for v in videos), default=1), settings.frames_upbound)
    frame_levels = range(most_frames, min(settings.min_frames, most_frames) - 1, -1) if videos else [most_frames]

    for n in n_levels:
        # Image plans depend on n only: made once per n, not once per (stride, frames) pair,
        # so the search costs n x pinpoints + n x strides x frames, not their product.
        image_plans = {}
        for k, m in enumerate(media):
            if isinstance(m, VideoMedia):
                continue
            if single:
                image_plans[k] = plan_anyres(m.width, m.height, settings, anyres_max=n)
            else:
                _check_size(m.width, m.height)
                image_plans[k] = BaseImagePlan(
                    width=m.width, height=m.height, base_tokens=settings.base_tokens,
                    fill=settings.base_image, newline=settings.image_newline,
                )
        for stride in stride_levels:
            for cap in frame_levels:
                items = [
                    plan_video(m.frames, settings, cap=cap, stride=stride) if isinstance(m, VideoMedia) else image_plans[k]
                    for k, m in enumerate(media)
                ]
                steps = []
                if cap < most_frames:
                    steps.append(f"frames {most_frames}->{cap}")
                if stride != settings.video_pool_stride:
                    steps.append(f"video pool stride {settings.video_pool_stride}->{stride}")
                if n != settings.anyres_max:
                    steps.append(f"anyres_max {settings.anyres_max}->{n}")
                yield SamplePlan(tuple(items)), tuple(steps)


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height} (width x height)")
