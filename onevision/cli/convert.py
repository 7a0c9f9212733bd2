"""`onevision convert`: rewrite a checkpoint in another layout, or assemble one from components.

Two forms, told apart by --llm: SRC DST rewrites checkpoint SRC into DST; --llm DIR --vision DIR DST
assembles DST from a language model and a vision tower. A mix of the two is refused.

Examples:
    onevision convert llava-onevision-qwen2-0.5b-ov out-hf --to hf              # LLaVA-NeXT -> transformers
    onevision convert out-hf out-next --to llava-next --dtype bf16
    onevision convert --llm Qwen2-0.5B-Instruct --vision siglip-so400m-patch14-384 stage1-init \\
        --to hf --vision-feature-layer -2                                        # stage-1 starting point
    onevision convert llava-v1.5-7b llava15-hf --to llava-hf --vision clip-vit-large-patch14-336
    onevision convert --llm vicuna-7b-v1.5 --vision clip-vit-large-patch14-336 llava15-init \\
        --to llava-original --family llava15                                     # LLaVA-1.5 stage 1

The source format is detected from config.json's model_type: 'llava_onevision' (transformers),
'llava_qwen' (original LLaVA-NeXT), 'llava' (transformers LlavaForConditionalGeneration) or
'llava_llama' (original LLaVA v1 / 1.5, whose CLIP tower is a folder of its own). Every key and shape is checked against the model the
config describes before anything is written; weights are written a shard at a time. A
tokenizer in the source folder (or given with --tokenizer) is written beside the weights.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from onevision.checkpoint.components import FAMILIES
from onevision.checkpoint.convert import DTYPES, FORMATS, convert, detect_format
from onevision.checkpoint.files import read_json
from onevision.cli.errors import InputError, loading, reading, show_path
from onevision.cli.options import add_dtype
from onevision.tokenizer import TOKENIZER_FILES, load_tokenizer

USAGE = """
  onevision convert SRC DST --to FORMAT [options]
  onevision convert --llm DIR --vision DIR DST --to FORMAT [options]"""
_SHARD_SIZE = re.compile(r"\s*([0-9]+)\s*([KMGT]B)?\s*", re.IGNORECASE)


def parse_shard_size(text: str) -> str:
    """An argparse type: a byte count, or a count and KB / MB / GB / TB ('5GB'), as transformers reads it."""
    match = _SHARD_SIZE.fullmatch(text)
    if match is None or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"expected a size such as 5GB, 500MB or a byte count, got {text!r}")
    return f"{int(match.group(1))}{(match.group(2) or '').upper()}" if match.group(2) else match.group(1)


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint between transformers, LLaVA-NeXT and LLaVA layouts, or build one from LLM + vision tower",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=USAGE,
    )
    # One positional list, checked in run(): argparse cannot give an optional SRC before DST
    # reliably once options come first.
    parser.add_argument("paths", nargs="+", metavar="SRC DST | DST", help="SRC DST (a checkpoint folder and the output folder), or DST alone with --llm and --vision")
    parser.add_argument("--to", required=True, choices=FORMATS, help="output layout")
    add_dtype(parser)
    parser.add_argument("--llm", type=Path, default=None, metavar="DIR", help="Qwen2 or Llama folder (*ForCausalLM.save_pretrained) to assemble DST from")
    parser.add_argument(
        "--vision",
        type=Path,
        default=None,
        metavar="DIR",
        help="SigLIP or CLIP folder: the tower to start from (with --llm), the shape of a LLaVA-NeXT source's tower, "
        "or an original LLaVA source's CLIP tower (default: its mm_vision_tower)",
    )
    parser.add_argument(
        "--vision-feature-layer",
        type=_feature_layers,
        default=None,
        metavar="N[,N...]",
        help="with --llm: tower layer used as features, later layers dropped (-2 as LLaVA-OneVision and LLaVA; "
        "default -1, or -2 with a llava family); a comma list (--vision-feature-layer=-2,-5) concatenates several",
    )
    parser.add_argument(
        "--family",
        choices=sorted(FAMILIES),
        default="onevision",
        help="with --llm: the system to start (projector, newline, class token, placeholders; default onevision)",
    )
    parser.add_argument("--tokenizer", type=Path, default=None, metavar="DIR", help="tokenizer folder to write beside the weights (default: the source's, if any)")
    parser.add_argument("--max-shard-size", type=parse_shard_size, default="5GB", metavar="SIZE", help="shard the weights past this size (default 5GB)")
    parser.add_argument(
        "--allow-unexpressible",
        action="store_true",
        help="with --to hf: write visual settings transformers' llava_onevision cannot express (e.g. LLaVA-NeXT's "
        "truncating unpad, grid newlines) for onevision only, with a warning; without it such a conversion is refused",
    )
    parser.set_defaults(func=run)
    return parser


def _feature_layers(text: str) -> int | list[int]:
    """An argparse type: one int, or a comma list of ints."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or a comma list of ints, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _load_tokenizer(folder: Path | None):
    if folder is None or not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return None
    config = folder / "config.json"
    if config.is_file():
        read_json(config)  # a list or broken JSON there fails transformers' loader with a TypeError
    try:
        return load_tokenizer(folder)
    except Exception as error:
        # Whatever a third-party loader raises on broken files is bad input here, not a bug of ours.
        raise InputError(f"cannot read the tokenizer in {show_path(folder)}: {type(error).__name__}: {error}") from error


def _default_layer(args: argparse.Namespace) -> int | list[int]:
    if args.vision_feature_layer is not None:
        return args.vision_feature_layer
    return -1 if args.family == "onevision" else -2


def check_paths(args: argparse.Namespace) -> tuple[Path | None, Path]:
    """(SRC or None, DST) of the form the arguments take; a mixed or incomplete form is refused.

    Raises:
        InputError: naming the flags and the paths given.
    """
    paths = [show_path(p) for p in args.paths]
    if args.llm is not None:
        if args.vision is None:
            raise InputError("--llm needs --vision (the SigLIP or CLIP folder): onevision convert --llm DIR --vision DIR DST")
        if len(args.paths) != 1:
            raise InputError(f"with --llm and --vision give DST alone (they are the source), got {len(paths)} paths: {paths}; "
                             "to rewrite a checkpoint SRC instead, drop --llm")
        return None, Path(args.paths[0])
    if len(args.paths) != 2:
        hint = " (to assemble DST from components, add --llm DIR --vision DIR)" if len(paths) == 1 else ""
        raise InputError(f"expected SRC DST, got {len(paths)} path(s): {paths}{hint}")
    if args.family != "onevision" or args.vision_feature_layer is not None:
        raise InputError("--family and --vision-feature-layer apply with --llm/--vision only (a checkpoint's own config says them)")
    return Path(args.paths[0]), Path(args.paths[1])


def run(args: argparse.Namespace) -> int:
    """Convert; 0 on success, 2 (raised for main() to report) on bad arguments or a checkpoint that cannot be converted."""
    src, dst = check_paths(args)
    if dst.exists() and not dst.is_dir():
        raise InputError(f"DST {show_path(dst)} exists and is not a folder")
    if args.tokenizer is not None and not any((args.tokenizer / n).is_file() for n in TOKENIZER_FILES):
        raise InputError(f"--tokenizer {show_path(args.tokenizer)} holds no tokenizer: looked for {list(TOKENIZER_FILES)}")
    if src is not None:
        with reading("SRC", src):
            detect_format(src)
    label, folder = ("--tokenizer", args.tokenizer) if args.tokenizer else ("SRC", src) if src else ("--llm", args.llm)
    with reading(label, folder):
        tokenizer = _load_tokenizer(folder)
    # A library error (safetensors, JSON) names no file: say which input it came from.
    sources = ("SRC", src) if src else ("--llm/--vision", f"{show_path(args.llm)} + {show_path(args.vision)}")
    with loading(*sources):
        checkpoint = convert(
            src,
            dst,
            to=args.to,
            dtype=DTYPES[args.dtype] if args.dtype else None,
            llm_dir=args.llm,
            vision_dir=args.vision,
            vision_feature_layer=_default_layer(args),
            family=args.family,
            tokenizer=tokenizer,
            max_shard_size=args.max_shard_size,
            strict=not args.allow_unexpressible,
        )
    source = checkpoint.source
    print(f"{source} ({checkpoint.format}) -> {dst} ({args.to}): {len(checkpoint.tensors)} tensors")
    if checkpoint.dropped:
        print(f"left out {len(checkpoint.dropped)} tensors the model does not use: {checkpoint.dropped}")
    return 0
