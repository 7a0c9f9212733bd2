"""`onevision demo`: the LLaVA-OneVision recipe end to end on a CPU, on a synthetic world.

Examples:
    onevision demo                      # about 7-9 minutes on 2 CPU cores
    onevision demo --out runs/demo --seed 1
    onevision demo --quick              # a shortened run (well under a minute), the CI smoke test
    onevision demo --family llava15     # LLaVA-1.5's two stages instead, same parts, same budget
    onevision demo --soup               # model soups from the stage 1.5 export (see below)
    onevision demo --soup --quick       # the same in seconds (a smoke test)

Builds the world (shapes in single images, image sets and short videos, with questions whose
answers are known), trains a small tokenizer, pretrains a Qwen2 decoder on the world's text and a
SigLIP tower with the sigmoid contrastive loss on its image-caption pairs, then runs stage 1
(projector alone), 1.5, 2 single-image and 2 OneVision with the shared training code, scoring
every scenario after every stage. Prints the accuracy tables (chance beside) and writes
table.txt, results.json, loss_curves.png, accuracy.png and model/ (the last export) to --out.
Every step is cached by its settings under --cache, so a rerun only re-prints.

--soup: model soups (Wortsman et al. 2022) instead of the curriculum's last stages. From the
stage 1.5 export (the demo's, cached) trains four short OneVision fine-tunes differing in
learning rate, weight decay and data seed, averages them (uniform soup) and builds the greedy
soup on a held-out split (test questions of a world of another seed, not the test split), then
prints one table per scenario: each ingredient, both soups, chance. Writes table.txt,
results.json, uniform_soup/ and greedy_soup/ to --out/soup. About 4 minutes with the demo's
pretraining and stages 1 and 1.5 cached (216 s measured on 2 CPU cores, mostly the four
fine-tunes), about 3 more when nothing is cached; seconds when everything is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from onevision.cli.errors import InputError, bounded_int, show_path
from onevision.cli.options import MAX_WORKERS, add_command, add_no_progress, add_seed


def register(subparsers) -> None:
    parser = add_command(subparsers, "demo", "pretrain, train every curriculum stage and evaluate on a synthetic world, on the CPU", __doc__)
    add_run_arguments(parser, default_out="runs/demo")
    parser.add_argument(
        "--family", choices=("onevision", "llava15"), default="onevision",
        help="system to train: LLaVA-OneVision's four stages (default) or LLaVA-1.5's two, from the same pretrained parts at the same budget",
    )
    parser.add_argument("--soup", action="store_true", help="model soups of fine-tunes from stage 1.5 (uniform and greedy), written to --out/soup")
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
    if args.soup:
        return run_soup(args)
    from onevision.demo import run_demo

    result = run_demo(
        config_from_args(args), args.out, cache_root=args.cache, use_cache=not args.no_cache, progress=not args.no_progress,
        family=args.family,
    )
    print(f"wrote {result.out_dir}/table.txt, results.json, loss_curves.png, accuracy.png and model/")
    return 0


def run_soup(args: argparse.Namespace) -> int:
    import dataclasses

    from onevision.demo.soup import full_soup_config, quick_soup_config, run_soup_demo

    if args.family != "onevision":
        raise InputError(f"--soup starts from OneVision's stage 1.5 export; it cannot be combined with --family {args.family}")
    demo = config_from_args(args)
    config = (quick_soup_config if args.quick else full_soup_config)(seed=args.seed)
    config = dataclasses.replace(config, demo=demo)
    out = Path(args.out) / "soup"
    run_soup_demo(config, out, cache_root=args.cache, use_cache=not args.no_cache, progress=not args.no_progress)
    print(f"wrote {out}/table.txt, results.json, uniform_soup/ and greedy_soup/")
    return 0
