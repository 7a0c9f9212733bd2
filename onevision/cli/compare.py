"""`onevision compare`: the demo's systems trained at equal compute on the synthetic world, side by side.

Examples:
    onevision compare                                  # onevision and llava15, reusing the demo's cache
    onevision compare --families onevision llava15 --out runs/compare
    onevision compare --quick --out /tmp/compare

Each family runs its own curriculum (LLaVA-OneVision: stages 1, 1.5, 2 single-image, 2
OneVision; LLaVA-1.5: plain captions, then vicuna_v1 instructions) from the same pretrained
tokenizer, decoder and tower, with the same total optimizer steps and nominal tokens. The last
stage of each is scored on the test split in every scenario it can take (LLaVA-1.5 takes no
video). Prints a table per scenario and per task, chance beside, and writes table.txt,
results.json and compare.png to --out.
"""

from __future__ import annotations

import argparse

from onevision.cli.demo import add_run_arguments, config_from_args
from onevision.cli.errors import InputError
from onevision.cli.options import add_command

FAMILY_NAMES = ("onevision", "llava15")


def register(subparsers) -> None:
    parser = add_command(subparsers, "compare", "train the demo's systems (onevision, llava15) at equal compute and compare them per scenario and task", __doc__)
    add_run_arguments(parser, default_out="runs/compare")
    parser.add_argument(
        "--families", nargs="+", default=list(FAMILY_NAMES), metavar="FAMILY",
        help=f"systems to compare, from {', '.join(FAMILY_NAMES)} (default: both)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onevision.demo.compare import run_compare

    families = tuple(args.families)
    unknown = [f for f in families if f not in FAMILY_NAMES]
    if unknown or len(set(families)) != len(families):
        raise InputError(f"--families: {'unknown ' + ', '.join(unknown) if unknown else 'a family named twice'}; choose distinct names from {', '.join(FAMILY_NAMES)}")
    result = run_compare(
        config_from_args(args), args.out, families=families, cache_root=args.cache, use_cache=not args.no_cache,
        progress=not args.no_progress,
    )
    print(f"wrote {result.out_dir}/table.txt, results.json and compare.png")
    return 0
