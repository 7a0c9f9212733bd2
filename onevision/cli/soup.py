"""`onevision soup`: average fine-tunes of one start into one model (Wortsman et al. 2022, arXiv 2203.05482).

Examples:
    onevision soup runs/grid/stage2_si/* --out runs/soup               # uniform soup of the grid
    onevision soup runs/a runs/b runs/c --out runs/greedy --greedy --eval world/val
    onevision soup grid stage2_si --lr 1e-5 2e-5 --weight-decay 0 0.1 --data-seed 0 1 --print
    onevision soup grid stage2_si model.size=debug --lr 1e-5 2e-5       # trains both runs in turn

RUN is a training export (runs/<stage>/hf) or a run folder holding one (runs/<stage>). All
must share config.json (the differing field is named) and the start recorded in their
onevision_start.json (written by every training export); an export without one is refused
unless --allow-unknown-start (then recorded in the soup's onevision_soup.json).

Uniform soup: the fp32 mean of all ingredients, streamed one shard at a time, written in the
first ingredient's layout with its config, tokenizer and processor files, in the ingredients'
dtype unless --dtype. Greedy soup (--greedy --eval DATA): ingredients scored on the held-out
records DATA as `onevision eval` scores them (multiple choice by likelihood), sorted, and each
added only if the held-out accuracy of the running average improves; every step is printed.
Score the soup on a split other than DATA to see whether it generalises.

`soup grid STAGE [KEY=VALUE...]` runs one `onevision train STAGE` per grid point, all from the
start the recipe resolves to (pinned), each with output_root ROOT/<point> (ROOT: --root, default
<output_root>/grid/<stage>); --print lists the commands instead. --lr and --weight-decay set
optim.lr and optim.weight_decay (parameters of an optim.groups entry keep the group's own),
--data-seed sets loop.seed (data order, dropout). A RUN folder named "grid" is given as ./grid.
"""

from __future__ import annotations

import argparse
import math
import shlex
from pathlib import Path

from onevision.cli.errors import InputError, bounded_int, reading, show_path
from onevision.cli.options import MAX_BATCH, MAX_SEED, add_command, add_dtype, parse_device

_AVERAGE_ONLY = ("out", "greedy", "eval", "dtype", "allow_unknown_start", "force", "limit", "media_root")
_GRID_ONLY = ("lr", "weight_decay", "data_seed", "root", "print")


def register(subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "soup", "average fine-tunes of one start (uniform or greedy model soup); 'soup grid' trains the ingredients", __doc__)
    parser.add_argument("items", nargs="+", metavar="RUN | grid STAGE [KEY=VALUE]", help="ingredients, or 'grid' and a stage recipe with overrides")
    soup = parser.add_argument_group("averaging")
    soup.add_argument("--out", type=Path, default=None, metavar="DIR", help="the soup's folder (required)")
    add_dtype(soup)
    soup.add_argument("--allow-unknown-start", action="store_true", help="accept ingredients that record no start fingerprint")
    soup.add_argument("--force", action="store_true", help="replace an existing --out folder")
    soup.add_argument("--greedy", action="store_true", help="greedy soup on the held-out records of --eval")
    soup.add_argument("--eval", nargs="+", type=Path, default=None, metavar="DATA", help="held-out record files or folders (greedy)")
    soup.add_argument("--media-root", type=Path, default=None, metavar="DIR", help="folder media paths are relative to")
    soup.add_argument("--limit", type=bounded_int(1), default=None, metavar="N", help="only the first N records (quick checks)")
    soup.add_argument("--device", type=parse_device, default="cpu", metavar="TYPE[:N]", help="torch device: cpu, cuda, cuda:N or mps (default cpu)")
    soup.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH), default=8, metavar="N", help=f"records per model batch (default 8, at most {MAX_BATCH})")
    grid = parser.add_argument_group("grid")
    grid.add_argument("--lr", nargs="+", default=None, metavar="RATE", help="values of optim.lr")
    grid.add_argument("--weight-decay", nargs="+", default=None, metavar="WD", help="values of optim.weight_decay")
    grid.add_argument("--data-seed", nargs="+", default=None, metavar="SEED", help="values of loop.seed")
    grid.add_argument("--root", type=Path, default=None, metavar="DIR", help="folder of the grid's runs (default <output_root>/grid/<stage>)")
    grid.add_argument("--print", action="store_true", help="print the training commands instead of running them")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Dispatch to the grid or the soup; bad input raises for main() (exit 2)."""
    if args.items[0] == "grid":
        _refuse(args, _AVERAGE_ONLY, "soup grid")
        return run_grid(args)
    _refuse(args, _GRID_ONLY, "an averaging soup (they belong to 'soup grid')")
    return run_soup(args)


def _refuse(args: argparse.Namespace, names: tuple[str, ...], what: str) -> None:
    given = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) not in (None, False)]
    if given:
        raise InputError(f"{', '.join(given)} cannot be used with {what}")


def run_soup(args: argparse.Namespace) -> int:
    from onevision.checkpoint.convert import DTYPES
    from onevision.checkpoint.fingerprint import describe_start, read_start
    from onevision.soup.average import uniform_soup

    overrides = [item for item in args.items if "=" in item]
    if overrides:
        raise InputError(f"{overrides[0]!r} looks like an override; overrides belong to 'onevision soup grid STAGE KEY=VALUE'")
    if args.out is None:
        raise InputError("--out is required: the folder to write the soup to")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())) and not args.force:
        raise InputError(f"--out {show_path(args.out)} exists and is not empty; pass --force to replace it")
    if args.eval is not None and not args.greedy:
        raise InputError("--eval is the held-out split of a greedy soup; add --greedy (a uniform soup scores nothing)")
    if args.greedy and args.eval is None:
        raise InputError("--greedy needs --eval DATA, the held-out records that decide which ingredients join")
    for path in args.eval or ():
        if not path.exists():
            raise InputError(f"--eval {show_path(path)} does not exist")
    dtype = DTYPES[args.dtype] if args.dtype else None
    if not args.greedy:
        out = uniform_soup(args.items, args.out, dtype, args.allow_unknown_start)
        print(f"uniform soup of {len(args.items)} ingredients from {describe_start(read_start(out))} -> {out}")
        return 0
    from onevision.soup.greedy import greedy_soup, held_out_scorer

    with reading("--eval", " ".join(show_path(p) for p in args.eval)):
        score = held_out_scorer(args.eval, device=args.device, batch_size=args.batch_size, media_root=args.media_root, limit=args.limit)
    held_out = " ".join(str(p) for p in args.eval)
    result = greedy_soup(args.items, args.out, score, dtype=dtype, allow_unknown_start=args.allow_unknown_start, held_out=held_out)
    best = result.steps[0]
    print(
        f"greedy soup of {len(result.kept)} of {len(result.steps)} ingredients: held-out accuracy {result.accuracy:.4f} "
        f"(best ingredient {best.own:.4f}, {best.ingredient}) -> {result.out}"
    )
    return 0


def run_grid(args: argparse.Namespace) -> int:
    from onevision.soup.grid import plan_grid
    from onevision.soup.grid import run_grid as train_grid

    if len(args.items) < 2:
        raise InputError("soup grid needs a stage: onevision soup grid STAGE [KEY=VALUE...] --lr ...")
    stage, overrides = args.items[1], list(args.items[2:])
    lr, more = _axis(args.lr, "--lr", _positive_float)
    overrides += more
    weight_decay, more = _axis(args.weight_decay, "--weight-decay", _non_negative_float)
    overrides += more
    data_seed, more = _axis(args.data_seed, "--data-seed", _seed)
    overrides += more
    malformed = [item for item in overrides if "=" not in item or item.startswith("-")]
    if malformed:
        raise InputError(f"soup grid: overrides are key.path=value, got {malformed}")
    with reading("STAGE", stage):
        plan = plan_grid(stage, overrides, lr=lr, weight_decay=weight_decay, data_seed=data_seed, root=args.root)
    for note in plan.notes:
        print(f"# {note}")
    if args.print:
        for command in plan.commands():
            print(shlex.join(command))
        return 0
    exports = train_grid(plan)
    print("ingredients:")
    for export in exports:
        print(f"  {export}")
    return 0


def _axis(values: list[str] | None, option: str, parse) -> tuple[list | None, list[str]]:
    """(parsed values, overrides that followed them): `--lr 1e-5 2e-5 model.size=debug` works."""
    if values is None:
        return None, []
    cut = next((k for k, v in enumerate(values) if "=" in v), len(values))
    numbers, trailing = values[:cut], values[cut:]
    if any("=" not in v for v in trailing):
        raise InputError(f"{option}: values come before overrides, got {values}")
    if not numbers:
        raise InputError(f"{option} needs at least one value")
    return [parse(v, option) for v in numbers], trailing


def _positive_float(text: str, option: str) -> float:
    value = _float(text, option)
    if not value > 0:
        raise InputError(f"{option}: expected a learning rate > 0, got {text!r}")
    return value


def _non_negative_float(text: str, option: str) -> float:
    value = _float(text, option)
    if not value >= 0:
        raise InputError(f"{option}: expected a weight decay >= 0, got {text!r}")
    return value


def _float(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{option}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{option}: expected a finite number, got {text!r}")
    return value


def _seed(text: str, option: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"{option}: expected an integer seed, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise InputError(f"{option}: expected a seed from 0 to {MAX_SEED}, got {value}")
    return value
