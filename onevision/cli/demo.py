"""`onevision demo`: the LLaVA-OneVision recipe end to end on a CPU, on a synthetic world.

Examples:
    onevision demo                      # about 5-10 minutes on 2 CPU cores
    onevision demo --out runs/demo --seed 1
    onevision demo --quick              # a shortened run (well under a minute), the CI smoke test
    onevision demo --family llava15     # LLaVA-1.5's two stages instead, same parts, same budget

Builds the world (shapes in single images, image sets and short videos, with questions whose
answers are known), trains a small tokenizer, pretrains a Qwen2 decoder on the world's text and a
SigLIP tower with the sigmoid contrastive loss on its image-caption pairs, then runs stage 1
(projector alone), 1.5, 2 single-image and 2 OneVision with the shared training code, scoring
every scenario after every stage. Prints the accuracy tables (chance beside) and writes
table.txt, results.json, loss_curves.png, accuracy.png and model/ (the last export) to --out.
Every step is cached by its settings under --cache, so a rerun only re-prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from onevision.cli.errors import InputError, bounded_int, show_path
from onevision.cli.options import MAX_WORKERS, add_no_progress, add_seed


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="pretrain, train every curriculum stage and evaluate on a synthetic world, on the CPU",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_run_arguments(parser, default_out="runs/demo")
    parser.add_argument(
        "--family", choices=("onevision", "llava15"), default="onevision",
        help="system to train: LLaVA-OneVision's four stages (default) or LLaVA-1.5's two, from the same pretrained parts at the same budget",
    )
    parser.set_defaults(func=run)


def add_run_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """Options shared by `demo` and `transfer`."""
    parser.add_argument("--out", default=default_out, metavar="DIR", help=f"output folder (default {default_out})")
    add_seed(parser, "the world, every initialisation and the data order")
    parser.add_argument("--quick", action="store_true", help="a shortened run that checks every step works (well under a minute)")
    parser.add_argument("--cache", default=None, metavar="DIR", help="cache folder (default $ONEVISION_CACHE/demo or ~/.cache/onevision/demo)")
    parser.add_argument("--no-cache", action="store_true", help="rebuild every step instead of reusing finished ones")
    parser.add_argument("--threads", type=bounded_int(1, MAX_WORKERS), default=None, metavar="N", help="torch CPU threads (default 1: results do not depend on the machine)")
    add_no_progress(parser)


def config_from_args(args: argparse.Namespace):
    """The demo config the options ask for; --out and --cache checked before anything runs."""
    import dataclasses

    from onevision.demo import full_config, quick_config

    for option, folder in (("--out", args.out), ("--cache", args.cache)):
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise InputError(f"{option} {show_path(folder)} exists and is not a folder")
    config = (quick_config if args.quick else full_config)(seed=args.seed)
    if args.threads is not None:
        config = dataclasses.replace(config, threads=args.threads)
    return config


def run(args: argparse.Namespace) -> int:
    from onevision.demo import run_demo

    result = run_demo(
        config_from_args(args), args.out, cache_root=args.cache, use_cache=not args.no_cache, progress=not args.no_progress,
        family=args.family,
    )
    print(f"wrote {result.out_dir}/table.txt, results.json, loss_curves.png, accuracy.png and model/")
    return 0
