"""`onevision eval`: score checkpoints on benchmark records; several give a transfer matrix.

Examples:
    onevision eval --checkpoints runs/ov/final --data world/test --report report.json
    onevision eval --checkpoints si=runs/si video=runs/video ov=runs/ov --data world/test \\
        --report transfer.json --plot transfer.png

--data takes .jsonl / .json record files or folders of .jsonl (searched recursively) in the
official LLaVA format plus "answer" and optionally "choices", "task", "scenario", "chance" (what
`onevision.world` writes). Media paths are read relative to --media-root, else the file's
folder (or the folder above it, where a world keeps its media).

Records with choices are multiple choice, scored by likelihood (--choice-by text, the default:
each choice's text under the record's own prompt; letter: the choices listed as "A. ..." lines and
their letters scored); records without are answered greedily and compared by exact match (case, whitespace and
a trailing period ignored). --mode forces one way for all.

Each checkpoint prints a table per scenario and per task (n, failed, accuracy, chance). With
several checkpoints (NAME=PATH, or PATH named after its folder) the transfer matrix (checkpoint x
scenario, chance row) is printed and, with --plot, drawn as a heat map. --report writes it all as
JSON, per-record predictions included.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from onevision.cli.errors import InputError, bounded_int, check_output_file, loading, reading, show_path
from onevision.cli.options import MAX_BATCH, MAX_NEW_TOKENS, add_choice_by, add_command, add_device_options, add_no_progress


def register(subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "eval", "score checkpoints on benchmark JSONL (exact match / multiple choice), transfer matrix", __doc__)
    parser.add_argument("--checkpoints", nargs="+", required=True, metavar="[NAME=]PATH", help="checkpoint folders, optionally named")
    parser.add_argument("--data", nargs="+", required=True, type=Path, metavar="PATH", help="record files or folders of .jsonl")
    parser.add_argument("--media-root", type=Path, default=None, metavar="DIR", help="folder media paths are relative to")
    parser.add_argument("--mode", choices=["auto", "choice", "generate"], default="auto", help="auto: choice when a record has choices (default)")
    add_choice_by(parser)
    parser.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH), default=8, metavar="N", help=f"records per model batch (default 8, at most {MAX_BATCH})")
    parser.add_argument("--max-new-tokens", type=bounded_int(1, MAX_NEW_TOKENS), default=32, metavar="N",
                        help="generation length for exact-match records (default 32)")
    parser.add_argument("--limit", type=bounded_int(1), default=None, metavar="N", help="only the first N records (quick checks)")
    parser.add_argument("--report", type=Path, default=None, metavar="FILE", help="write the JSON report here")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE", help="write the transfer-matrix heat map (PNG) here")
    add_device_options(parser)
    add_no_progress(parser)
    parser.set_defaults(func=run)
    return parser


def parse_checkpoints(entries: list[str]) -> list[tuple[str, Path]]:
    """[NAME=]PATH entries -> (name, path); unnamed ones take their folder's name.

    Raises:
        InputError: an empty name or path, or two checkpoints with the same name.
    """
    named = []
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep:
            name, path = Path(entry).name, entry
        if not name or not path:
            raise InputError(f"--checkpoints: expected [NAME=]PATH, got {show_path(entry)!r}")
        named.append((name, Path(path)))
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise InputError(f"--checkpoints: names must differ (name them NAME=PATH): {names}")
    return named


def run(args: argparse.Namespace) -> int:
    """Evaluate every checkpoint; 0 on success; bad arguments, records or checkpoints raise for main() (2)."""
    from onevision.checkpoint import detect_format
    from onevision.infer.evaluate import evaluate, plot_matrix, read_benchmark, save_report, transfer_matrix
    from onevision.infer.pipeline import OneVision

    checkpoints = parse_checkpoints(args.checkpoints)
    for _name, path in checkpoints:  # all of them before the first one runs for minutes
        with reading("--checkpoints", path):
            detect_format(path)
    for option, path in (("--report", args.report), ("--plot", args.plot)):
        if path is not None:
            check_output_file(option, path)
    if args.media_root is not None and not args.media_root.is_dir():
        raise InputError(f"--media-root {show_path(args.media_root)} is not a folder")
    for path in args.data:
        if not path.exists():
            raise InputError(f"--data {show_path(path)} does not exist")
    with reading("--data", " ".join(show_path(p) for p in args.data)):
        items = read_benchmark(args.data, args.media_root)
    if args.limit is not None:
        items = items[: args.limit]
    if not items:
        raise InputError(f"--data: no records in {[show_path(p) for p in args.data]}")
    reports = []
    for name, path in checkpoints:
        with loading("--checkpoints", path):
            pipe = OneVision.from_pretrained(path, device=args.device, dtype=args.dtype)
        report = evaluate(
            pipe,
            items,
            name=name,
            mode=args.mode,
            choice_by=args.choice_by,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            progress=not args.no_progress,
        )
        reports.append(report)
        del pipe
        print(f"\n== {name} ({path})")
        print(report.table("scenario"))
        print()
        print(report.table("task"))
    matrix = transfer_matrix(reports)
    if len(reports) > 1:
        print("\n== transfer matrix (accuracy)")
        print(matrix.table())
    if args.plot is not None:
        print(f"heat map: {plot_matrix(matrix, args.plot)}")
    if args.report is not None:
        save_report(reports[0] if len(reports) == 1 else reports, args.report, matrix if len(reports) > 1 else None)
        print(f"report: {args.report}")
    return 0
