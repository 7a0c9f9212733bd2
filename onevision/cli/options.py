"""Options several commands share, so they read (and are bounded) the same everywhere."""

from __future__ import annotations

import argparse

from onevision.cli.errors import bounded_float, bounded_int, loading
from onevision.model.config import PRESETS

# Upper bounds of options that size an allocation, so a slip (an extra zero) is refused at once.
MAX_FRAMES = 1024
"""Frames per video: 1024 frames of 384x384x3 float32 are 1.8 GB of pixels already."""
MAX_NEW_TOKENS = 32768
"""The released models' model_max_length."""
MAX_BATCH = 1024
"""Videos or records per model batch."""
MAX_WORKERS = 256
"""Decoding threads or processes."""
MAX_SEED = 2**32 - 1
"""numpy's seeds are 32-bit."""
DEVICE_TYPES = ("cpu", "cuda", "mps")
PRESET_SIZES = tuple(PRESETS)
"""The model presets in one order everywhere: LLaVA-OneVision smallest first, then the LLaVA families."""
DTYPES = ("bf16", "fp16", "fp32")
"""Weight dtypes an option can cast to, in this order everywhere."""
CHOICE_BY = ("text", "letter")
"""How --choice-by scores options; text first, the default (its help says why)."""
SEED_HELP = "default 0, so rerunning a command repeats its result"
EXAMPLES = "Examples:"
"""The heading of the examples block in every command's --help."""

# A flag whose spelling meant different things in different commands is refused, naming what
# replaced it: (old flag) -> (message). Each command that had it registers it with `add_retired`.
RETIRED = {
    "--image-size": "--image-size is the tower's tile side (tokens); the side of the world's rendered images "
    "and frames is --render-size PX",
    "--model-size": "--model-size is gone: use --visual-preset SIZE for a preset's visual settings "
    "(tokens, data check) or --random-model debug for a random model (generate, video-qa)",
}


class _Retired(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(RETIRED[option_string])


def add_retired(parser: argparse.ArgumentParser, *flags: str) -> None:
    """Accept `flags` only to refuse them with a message naming their replacement (hidden from --help)."""
    for flag in flags:
        parser.add_argument(flag, action=_Retired, nargs="?", help=argparse.SUPPRESS)


def add_command(subparsers, name: str, help: str, doc: str) -> argparse.ArgumentParser:
    """The `name` subcommand's parser: `help` in the command list, the module docstring `doc`
    (with its examples) as --help's description, kept as written."""
    return subparsers.add_parser(name, help=help, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """--model DIR or --random-model debug (exactly one)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="DIR", help="checkpoint folder (weights, config.json and tokenizer files)")
    source.add_argument(
        "--random-model", choices=["debug"], metavar="SIZE",
        help="a random model of this size (only 'debug') and a tiny tokenizer, built in memory: its answers are "
        "noise, it shows the command runs",
    )
    add_retired(parser, "--model-size")


def load_model_source(args: argparse.Namespace):
    """The `Pipeline` that `add_model_source`, `add_device_options`, `add_generation_options`
    (--num-frames) and `add_seed` asked for; a checkpoint that does not load is reported against --model."""
    from onevision.infer.loading import load_pipeline
    from onevision.infer.pipeline import InferenceConfig

    with loading("--model", args.model):
        return load_pipeline(
            args.model,
            args.random_model,
            device=args.device,
            dtype=args.dtype,
            config=InferenceConfig(num_frames=args.num_frames),
            seed=args.seed,
        )


def add_visual_preset(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--visual-preset SIZE: the visual settings (tile size, AnyRes-Max-N, video pooling) of a model preset."""
    parser.add_argument(
        "--visual-preset", choices=PRESET_SIZES, default="0.5b", metavar="SIZE",
        help=f"model preset whose visual settings plan the tokens: {', '.join(PRESET_SIZES)} (default 0.5b; the "
        "released OneVision sizes share SigLIP-384 tiles and AnyRes-Max-9; llava15-*: 576 tokens per image, "
        "llava-v1-*: 256, no newline)",
    )


def add_seed(parser: argparse.ArgumentParser, what: str) -> None:
    """--seed N, default 0 everywhere: a command rerun gives the same result unless asked otherwise."""
    parser.add_argument("--seed", type=bounded_int(0, MAX_SEED), default=0, metavar="N", help=f"seed of {what} ({SEED_HELP})")


def add_choice_by(parser: argparse.ArgumentParser) -> None:
    """--choice-by text|letter, default text (see the help)."""
    parser.add_argument(
        "--choice-by", choices=CHOICE_BY, default="text",
        help="how multiple-choice options are scored by likelihood: text (default) scores each option's own words "
        "under the question as written, which any checkpoint can answer; letter lists them as 'A. ...' lines and "
        "scores the letters, the prompt the released LLaVA-OneVision models were tuned on",
    )


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    """--no-progress: hide progress bars (which print whole lines, not redraws, into a log)."""
    parser.add_argument("--no-progress", action="store_true",
                        help="hide progress bars (written to a log file they print a line every 30 s)")


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--device and --dtype: where the model runs and what its weights are cast to."""
    parser.add_argument("--device", type=parse_device, default="cpu", metavar="TYPE[:N]", help="torch device: cpu, cuda, cuda:N or mps (default cpu)")
    add_dtype(parser)


def add_dtype(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--dtype bf16|fp16|fp32: cast the floating weights; default none (as stored)."""
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="cast the floating weights (default: keep the stored dtype)")


def add_generation_options(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    """--max-new-tokens, --temperature, --num-frames: bounded before anything is loaded."""
    parser.add_argument("--max-new-tokens", type=bounded_int(1, MAX_NEW_TOKENS), default=max_new_tokens, metavar="N",
                        help=f"most tokens per answer (default {max_new_tokens}, at most {MAX_NEW_TOKENS})")
    parser.add_argument("--temperature", type=bounded_float(0.0, 100.0), default=0.0, metavar="T", help="0 decodes greedily (default); > 0 samples")
    parser.add_argument("--num-frames", type=bounded_int(1, MAX_FRAMES), default=None, metavar="N",
                        help=f"frames sampled per video (default: the checkpoint's frames_upbound; at most {MAX_FRAMES})")


def examples_block(doc: str) -> str:
    """The "Examples:" block of a module docstring (up to the first blank line), for an epilog."""
    start = doc.index(EXAMPLES)
    end = doc.find("\n\n", start)
    return doc[start:] if end < 0 else doc[start : end + 1]


def parse_device(text: str) -> str:
    """An argparse type: a device torch knows and this machine has (checked before loading a model)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a device: {text!r}; use one of cpu, cuda, cuda:N, mps") from None
    if device.type not in DEVICE_TYPES:
        raise argparse.ArgumentTypeError(f"unsupported device type {device.type!r}; use one of cpu, cuda, cuda:N, mps")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: no CUDA device is visible")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: only {count} CUDA device(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available")
    return text
