"""`onevision tokens`: how many visual tokens a sample's media take, and how they are laid out.

Examples:
    onevision tokens --image 640x480                      # one image: AnyRes-Max-9, 2929 tokens
    onevision tokens --images 768x768,1152x1152           # two images at base size: 730 each
    onevision tokens --video-frames 32                    # 32 frames x 196 + 1 newline = 6273
    onevision tokens --image 1920x1080 --video-frames 64 --max-visual-tokens 8000
    onevision tokens --image 640x480 --visual-preset debug --json

Sizes are WIDTHxHEIGHT, as image tools print them. The count is the planner's
(`onevision.budget.plan_sample`), the one data loading, packing and the model all use.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys

from onevision.budget import (
    AnyResPlan,
    BaseImagePlan,
    BudgetError,
    ImageMedia,
    SamplePlan,
    VideoMedia,
    VisualSettings,
    plan_sample,
)
from onevision.budget.planner import VIDEO_NEWLINE_POLICIES, ItemPlan
from onevision.cli.errors import bounded_int
from onevision.cli.options import MAX_FRAMES, add_command, add_retired, add_visual_preset

_SIZE = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*")
MAX_GRID = 64
"""Largest --max-grid: the pinpoints are all K x K grids (4096 here; the released models use 6)."""
MAX_ANYRES = 64
"""Largest --anyres-max (the released models use 9). With a budget the planner tries every N
below it for every frame count and stride, so N and --frames-upbound bound its work."""

# (flag destination, VisualSettings field) for the settings flags.
_SETTING_FLAGS = (
    ("image_size", "image_size"),
    ("patch_size", "patch_size"),
    ("anyres_max", "anyres_max"),
    ("max_grid", "max_grid"),
    ("pool_stride", "video_pool_stride"),
    ("video_newline", "video_newline"),
    ("frames_upbound", "frames_upbound"),
    ("max_visual_tokens", "max_visual_tokens"),
)


def parse_size(text: str) -> ImageMedia:
    """'640x480' (width x height) -> ImageMedia(640, 480); anything else raises ArgumentTypeError."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"image sides must be positive, got {text!r}")
    return ImageMedia(width=width, height=height)


def parse_sizes(text: str) -> list[ImageMedia]:
    """'768x768,1152x1152' -> one ImageMedia per comma-separated WIDTHxHEIGHT."""
    parts = text.split(",")
    if not text.strip() or any(not part.strip() for part in parts):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT[,WIDTHxHEIGHT...], got {text!r}")
    return [parse_size(part) for part in parts]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def register(subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "tokens", "count the visual tokens of images / videos and show their layout", __doc__)
    media = parser.add_argument_group("media (placeholder order: images, then videos)")
    media.add_argument("--image", type=parse_size, metavar="WxH", help="one image: AnyRes-Max-N crops")
    media.add_argument("--images", type=parse_sizes, metavar="WxH,WxH,...", help="a multi-image sample: base size each")
    media.add_argument("--video-frames", type=_positive, action="append", default=[], metavar="F",
                       help="a video able to deliver F frames (repeat for several videos)")
    settings = parser.add_argument_group("visual settings (defaults: the --visual-preset's; each flag overrides one)")
    add_visual_preset(settings)
    add_retired(parser, "--model-size")
    settings.add_argument("--image-size", type=_positive, metavar="PX", help="tower input side in pixels (384)")
    settings.add_argument("--patch-size", type=_positive, metavar="PX", help="tower patch side in pixels (14)")
    settings.add_argument("--anyres-max", type=bounded_int(1, MAX_ANYRES), metavar="N", help=f"N of AnyRes-Max-N (9; at most {MAX_ANYRES})")
    settings.add_argument("--max-grid", type=bounded_int(1, MAX_GRID), metavar="K",
                          help=f"largest crop grid side of the pinpoints (6; at most {MAX_GRID})")
    settings.add_argument("--pool-stride", type=_positive, metavar="S", help="video feature pooling stride (2)")
    settings.add_argument("--video-newline", choices=VIDEO_NEWLINE_POLICIES, help="video newline policy (video)")
    settings.add_argument("--frames-upbound", type=bounded_int(1, MAX_FRAMES), metavar="F",
                          help=f"most frames sampled from a video (32; at most {MAX_FRAMES})")
    settings.add_argument("--max-visual-tokens", type=_positive, metavar="T", help="per-sample budget; the plan degrades to fit")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON (its 'total' is the count)")
    parser.set_defaults(func=run)
    return parser


def settings_from_args(args: argparse.Namespace) -> VisualSettings:
    """The preset's (or the default) visual settings with the flags given on top."""
    from onevision.model.config import preset

    base = preset(args.visual_preset).visual
    overrides = {field: getattr(args, dest) for dest, field in _SETTING_FLAGS if getattr(args, dest) is not None}
    return dataclasses.replace(base, **overrides)


def media_from_args(args: argparse.Namespace) -> list[ImageMedia | VideoMedia]:
    """Images first (`--image`, then `--images`), then one VideoMedia per `--video-frames`."""
    media: list[ImageMedia | VideoMedia] = []
    if args.image is not None:
        media.append(args.image)
    media.extend(args.images or [])
    media.extend(VideoMedia(frames) for frames in args.video_frames)
    return media


def run(args: argparse.Namespace) -> int:
    """Print the plan of the media given on the command line; 2 on bad input, 1 over budget."""
    media = media_from_args(args)
    if not media:
        print("onevision tokens: error: give at least one of --image, --images, --video-frames", file=sys.stderr)
        return 2
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        print(f"onevision tokens: error: {error}", file=sys.stderr)
        return 2
    try:
        plan = plan_sample(media, settings)
    except BudgetError as error:
        print(f"onevision tokens: {error}", file=sys.stderr)
        return 1
    print(json.dumps(plan.to_dict(), indent=2) if args.json else format_plan(plan, settings))
    return 0


def format_plan(plan: SamplePlan, settings: VisualSettings) -> str:
    """A table of the plan's items (feature maps as rows x cols), the total, any degradation steps."""
    side = settings.patches_per_side
    budget = "none" if settings.max_visual_tokens is None else str(settings.max_visual_tokens)
    lines = [
        f"settings: {settings.image_size} px tiles, patch {settings.patch_size} ({side}x{side} tokens per tile), "
        f"AnyRes-Max-{settings.anyres_max}, grid up to {settings.max_grid}x{settings.max_grid}, "
        f"video stride {settings.video_pool_stride}, video newline '{settings.video_newline}', "
        f"frames <= {settings.frames_upbound}, budget {budget}",
        f"scenario: {plan.scenario}",
    ]
    header = ("#", "kind", "size", "tiles", "grid", "unpadded", "pooled", "tokens")
    rows = [header] + [_row(index, item, side) for index, item in enumerate(plan.items, 1)]
    widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
    for row in rows:
        cells = (cell.rjust(w) if col in (0, 3, 7) else cell.ljust(w) for col, (cell, w) in enumerate(zip(row, widths)))
        lines.append("  ".join(cells).rstrip())
    lines.append(f"total: {plan.total} visual tokens")
    if plan.degraded:
        lines.append(f"degraded to fit the budget of {plan.budget}: " + "; ".join(plan.degraded))
    return "\n".join(lines)


def _row(index: int, item: ItemPlan, side: int) -> tuple[str, ...]:
    if isinstance(item, AnyResPlan):
        grid = f"base+{item.grid[0]}x{item.grid[1]}"
        return (str(index), "image", f"{item.width}x{item.height}", str(item.num_tiles), grid,
                _rc(item.unpadded), _rc(item.pooled), str(item.tokens))
    if isinstance(item, BaseImagePlan):
        return (str(index), "multi_image", f"{item.width}x{item.height}", "1", "base", "-", f"{side}x{side}", str(item.tokens))
    frames = f"{item.frames} frames" + (f" (of {item.source_frames})" if item.source_frames != item.frames else "")
    pooled = f"{item.pooled_side}x{item.pooled_side}/frame (stride {item.pool_stride})"
    return (str(index), "video", frames, str(item.num_tiles), "base", "-", pooled, str(item.tokens))


def _rc(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"
