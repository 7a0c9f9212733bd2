"""`onevision transfer`: train single-image only vs the OneVision mixture from one stage-1.5
checkpoint and compare them on every scenario (the transfer matrix).

Examples:
    onevision transfer                               # reuses the demo's cached pretraining and stages 1 / 1.5
    onevision transfer --recipes single_image,multi_image,video,onevision
    onevision transfer --quick --out /tmp/transfer

Rows are training recipes, all trained for the same steps from the same start; columns are test
scenarios (single_image, multi_image, video), with each column's chance level beside. Prints the
matrix and a per-task table and writes table.txt, results.json and transfer.png to --out.
"""

from __future__ import annotations

import argparse

from onevision.cli.demo import add_run_arguments, config_from_args
from onevision.cli.errors import InputError
from onevision.cli.options import add_command


def register(subparsers) -> None:
    parser = add_command(subparsers, "transfer", "cross-scenario transfer on the synthetic world: single-image vs OneVision training", __doc__)
    add_run_arguments(parser, default_out="runs/transfer")
    parser.add_argument(
        "--recipes",
        default="single_image,onevision",
        metavar="NAME,NAME,...",
        help="comma-separated rows to train, from single_image, multi_image, video, onevision (default single_image,onevision)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onevision.demo.transfer import RECIPES, run_transfer

    recipes = tuple(r.strip() for r in args.recipes.split(",") if r.strip())
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown or not recipes:
        raise InputError(f"--recipes: unknown recipe(s) {unknown or args.recipes!r}; choose from {', '.join(RECIPES)}")
    result = run_transfer(
        config_from_args(args), args.out, recipes=recipes, cache_root=args.cache, use_cache=not args.no_cache,
        progress=not args.no_progress,
    )
    print(f"wrote {result.out_dir}/table.txt, results.json and transfer.png")
    return 0
