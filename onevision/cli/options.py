"""Options several commands share, so they read (and are bounded) the same everywhere."""

from __future__ import annotations

import argparse

from onevision.cli.errors import bounded_float, bounded_int

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


def add_model_source(parser: argparse.ArgumentParser, debug_help: str) -> None:
    """--model FOLDER or --model-size debug (exactly one)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint folder (weights, config.json and tokenizer files)")
    source.add_argument("--model-size", choices=["debug"], help=debug_help)


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--device and --dtype: where the model runs and what its weights are cast to."""
    parser.add_argument("--device", type=parse_device, default="cpu", help="torch device: cpu, cuda, cuda:N or mps (default cpu)")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None, help="cast the weights (default: as stored)")


def add_generation_options(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    """--max-new-tokens, --temperature, --num-frames: bounded before anything is loaded."""
    parser.add_argument("--max-new-tokens", type=bounded_int(1, MAX_NEW_TOKENS), default=max_new_tokens,
                        help=f"most tokens per answer (default {max_new_tokens}, at most {MAX_NEW_TOKENS})")
    parser.add_argument("--temperature", type=bounded_float(0.0, 100.0), default=0.0, help="0 decodes greedily (default); > 0 samples")
    parser.add_argument("--num-frames", type=bounded_int(1, MAX_FRAMES), default=None,
                        help=f"frames sampled per video (default: the checkpoint's frames_upbound; at most {MAX_FRAMES})")


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
