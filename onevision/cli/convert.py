"""`onevision convert`: rewrite a checkpoint in another layout, or assemble one from components.

    onevision convert llava-onevision-qwen2-0.5b-ov out-hf --to hf              # LLaVA-NeXT -> transformers
    onevision convert out-hf out-next --to llava-next --dtype bf16
    onevision convert --llm Qwen2-0.5B-Instruct --vision siglip-so400m-patch14-384 stage1-init \\
        --to hf --vision-feature-layer -2                                        # stage-1 starting point

The source format is detected from config.json's model_type: 'llava_onevision' (transformers)
or 'llava_qwen' (original LLaVA-NeXT). Every key and shape is checked against the model the
config describes before anything is written; weights are written a shard at a time. A
tokenizer in the source folder (or given with --tokenizer) is written beside the weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from onevision.checkpoint.convert import DTYPES, FORMATS, convert
from onevision.checkpoint.files import CheckpointError

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint between transformers and LLaVA-NeXT layouts, or build one from LLM + SigLIP",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="SRC DST: source checkpoint folder and output folder (DST alone with --llm/--vision)")
    parser.add_argument("--to", required=True, choices=FORMATS, help="output layout")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="cast floating weights (default: keep)")
    parser.add_argument("--llm", type=Path, default=None, help="Qwen2 folder (Qwen2ForCausalLM.save_pretrained) to start from")
    parser.add_argument(
        "--vision",
        type=Path,
        default=None,
        help="SigLIP folder: the tower to start from (with --llm), or the shape of a LLaVA-NeXT source's tower",
    )
    parser.add_argument(
        "--vision-feature-layer",
        type=int,
        default=-1,
        help="with --llm: SigLIP layer used as features, later layers dropped (-2 as LLaVA-OneVision; default -1)",
    )
    parser.add_argument("--tokenizer", type=Path, default=None, help="tokenizer folder to write beside the weights (default: the source's, if any)")
    parser.add_argument("--max-shard-size", default="5GB", help="shard the weights past this size (default 5GB)")
    parser.set_defaults(func=run)
    return parser


def _load_tokenizer(folder: Path | None):
    if folder is None or not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def run(args: argparse.Namespace) -> int:
    """Convert; 0 on success, 2 on bad arguments, 1 when the checkpoint cannot be converted."""
    components = args.llm is not None
    if len(args.paths) != (1 if components else 2):
        expected = "DST (with --llm and --vision)" if components else "SRC DST"
        print(f"onevision convert: error: expected {expected}, got {len(args.paths)} path(s): {args.paths}", file=sys.stderr)
        return 2
    if components and args.vision is None:
        print("onevision convert: error: --llm needs --vision (the SigLIP folder)", file=sys.stderr)
        return 2
    src = None if components else Path(args.paths[0])
    dst = Path(args.paths[-1])
    try:
        if args.tokenizer is not None and not any((args.tokenizer / n).is_file() for n in _TOKENIZER_FILES):
            raise CheckpointError(f"{args.tokenizer} holds no tokenizer: looked for {list(_TOKENIZER_FILES)}")
        tokenizer = _load_tokenizer(args.tokenizer or src or args.llm)
        checkpoint = convert(
            src,
            dst,
            to=args.to,
            dtype=DTYPES[args.dtype] if args.dtype else None,
            llm_dir=args.llm,
            vision_dir=args.vision,
            vision_feature_layer=args.vision_feature_layer,
            tokenizer=tokenizer,
            max_shard_size=args.max_shard_size,
        )
    except CheckpointError as error:
        print(f"onevision convert: error: {error}", file=sys.stderr)
        return 1
    source = checkpoint.source
    print(f"{source} ({checkpoint.format}) -> {dst} ({args.to}): {len(checkpoint.tensors)} tensors")
    if checkpoint.dropped:
        print(f"left out {len(checkpoint.dropped)} tensors the model does not use: {checkpoint.dropped}")
    return 0
