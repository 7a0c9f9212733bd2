"""`onevision world`: write the synthetic world to a folder, ready to train on.

Examples:
    onevision world runs/world                        # 160 train + 24 test items per task
    onevision world runs/world --train 40 --test 8 --seed 1
    onevision world runs/world --scenarios single_image video

Writes train/ and test/ records (LLaVA JSONL), media/ (PNG/JPEG images, MP4 videos) and
recipes/<stage>.yaml: one data mixture per curriculum stage (stage1, stage1_5, stage2_si,
stage2_ov) in the official LLaVA-NeXT syntax, so any stage recipe can train on it:

    onevision train stage1 model.size=debug data.recipe=runs/world/recipes/stage1.yaml

The world is the one `onevision demo` trains on: rendered shapes with questions whose answers
are known by construction. Nothing is downloaded. A rebuild with the same settings reuses the
folder.
"""

from __future__ import annotations

import argparse
import sys

from onevision.cli.options import add_command, add_no_progress, add_retired, add_seed


def register(subparsers) -> None:
    from onevision.world.build import SCENARIOS

    parser = add_command(subparsers, "world", "write the synthetic world (records, media, per-stage data recipes) to a folder", __doc__)
    parser.add_argument("out", metavar="DIR", help="folder to write the world into")
    parser.add_argument("--train", type=int, default=160, metavar="N", help="train items per task (default 160)")
    parser.add_argument("--test", type=int, default=24, metavar="N", help="test items per task (default 24)")
    add_seed(parser, "every rendered item")
    parser.add_argument("--render-size", type=int, default=64, metavar="PX", help="side of the rendered images and video frames in pixels, even (default 64)")
    add_retired(parser, "--image-size")
    parser.add_argument("--frames", type=int, default=8, metavar="N", help="frames per video (default 8)")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="scenarios to generate (default all)")
    add_no_progress(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onevision.world.build import build_world
    from onevision.world.recipes import write_world_recipes

    limits = {"--train": (args.train, 0, 100_000), "--test": (args.test, 0, 100_000),
              "--render-size": (args.render_size, 32, 1024), "--frames": (args.frames, 1, 256)}
    for name, (value, low, high) in limits.items():
        if not low <= value <= high:
            print(f"onevision world: error: {name} must be in [{low}, {high}], got {value}", file=sys.stderr)
            return 2
    if args.render_size % 2:
        print(f"onevision world: error: --render-size must be even (yuv420p video), got {args.render_size}", file=sys.stderr)
        return 2
    manifest = build_world(
        args.out, seed=args.seed, n_train=args.train, n_test=args.test, image_size=args.render_size,
        frames=args.frames, scenarios=tuple(args.scenarios), progress=not args.no_progress,
    )
    recipes = write_world_recipes(args.out)
    print(f"world {manifest.root}: {manifest.count('train')} train and {manifest.count('test')} test items")
    for stage, path in recipes.items():
        print(f"  {stage:<9} {path}")
    return 0
