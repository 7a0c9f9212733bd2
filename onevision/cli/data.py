"""`onevision data`: inspect training data.

Examples:
    onevision data check RECIPE.yaml                      # every record, its media and tokens
    onevision data check RECIPE.yaml --workers 8 --json   # one JSON object on stdout
    onevision data check stage1.yaml --template plain --visual-preset 7b --max-length 4096

`check` reads every record and its media through the training Dataset (decode, pixels,
tokens), prints counts per modality, token-length statistics per modality and every bad
record with its file and reason, and exits 1 when any record is bad, 2 when the recipe, a
record file, the tokenizer or an argument is bad (one line on stderr), 3 on an internal error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from onevision.cli.errors import EXIT_FOUND, InputError, bounded_int, printable, reading, show_path
from onevision.cli.options import MAX_NEW_TOKENS, MAX_WORKERS, add_command, add_no_progress, add_retired, add_visual_preset, examples_block
from onevision.data.check import check_recipe
from onevision.data.dataset import DataConfig
from onevision.data.recipe import load_recipe
from onevision.data.template import TEMPLATES, TemplateConfig
from onevision.model.config import preset


def register(subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "data", "inspect training data (check a recipe's records and media)", __doc__)
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION")
    check = commands.add_parser(
        "check",
        help="load every record and its media as training would; list bad records",
        description=(
            "Load every record of a recipe and its media through the training Dataset (media decoded, "
            "pixels cut, conversation tokenised), print counts per modality, token-length statistics "
            "(min/mean/median/p95/max per modality) and every bad record with its file and reason. "
            "Exit status 1 when any record is bad, 2 on a bad argument or a recipe, record file or "
            "tokenizer that cannot be read, 3 on an internal error."
        ),
        epilog=examples_block(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("recipe", metavar="RECIPE", help="mixture YAML (official LLaVA-NeXT format)")
    check.add_argument("--json", action="store_true", help='print one JSON object {"ok", "bad", "stats", "counts"}')
    check.add_argument("--workers", type=bounded_int(0, MAX_WORKERS), default=0, metavar="N", help="decoding worker processes (default 0: in-process)")
    check.add_argument("--max-length", type=bounded_int(1, 4 * MAX_NEW_TOKENS), default=TemplateConfig.max_length, metavar="N",
                       help="most tokens per sample (default %(default)s)")
    add_visual_preset(check)
    add_retired(check, "--model-size")
    check.add_argument("--tokenizer", default="qwen2", metavar="DIR", help="'qwen2' (built locally) or a tokenizer folder (default %(default)s)")
    check.add_argument("--template", default="chatml", choices=TEMPLATES, help="chat template (default %(default)s; 'plain' for stage 1)")
    check.add_argument("--time-instruction", action="store_true", help="add LLaVA-Video's frame-time prompt to videos")
    add_no_progress(check)
    check.set_defaults(func=run)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    return parser


def load_tokenizer(name: str):
    """'qwen2' -> the real Qwen2 tokenizer (built from local files); else a saved tokenizer folder."""
    from onevision.tokenizer import load_tokenizer as read_tokenizer

    if name == "qwen2":
        return read_tokenizer(name)
    if not Path(name).is_dir():
        raise InputError(f"--tokenizer {show_path(name)}: not 'qwen2' and not a folder")
    try:
        return read_tokenizer(name)
    except Exception as error:
        # Whatever a third-party loader raises on broken files is bad input here, not a bug of ours.
        raise InputError(f"--tokenizer {show_path(name)}: cannot read the tokenizer: {type(error).__name__}: {error}") from error


def run(args: argparse.Namespace) -> int:
    """0 when every record is good, 1 when some are bad; bad input raises for main() (2)."""
    with reading("recipe", args.recipe):
        recipe = load_recipe(args.recipe)
    tokenizer = load_tokenizer(args.tokenizer)
    config = DataConfig(
        visual=preset(args.visual_preset).visual,
        template=TemplateConfig(template=args.template, max_length=args.max_length),
        time_instruction=args.time_instruction,
    )
    with reading("recipe", args.recipe):
        report = check_recipe(recipe, tokenizer, config, workers=args.workers, progress=not args.no_progress)
    if args.json:
        # ensure_ascii (the default) writes undecodable name bytes as \\u escapes: valid JSON.
        print(json.dumps(report.to_dict(), indent=None))
    else:
        print(printable(f"{args.recipe} ({args.visual_preset} visual settings, {args.template} template, max_length {args.max_length})"))
        print(printable(report.format()))
    return 0 if report.ok else EXIT_FOUND
