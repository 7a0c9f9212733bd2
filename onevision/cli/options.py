"""Options several commands share, so they read the same everywhere."""

from __future__ import annotations

import argparse


def add_model_source(parser: argparse.ArgumentParser, debug_help: str) -> None:
    """--model FOLDER or --model-size debug (exactly one)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint folder (weights, config.json and tokenizer files)")
    source.add_argument("--model-size", choices=["debug"], help=debug_help)


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """--device and --dtype: where the model runs and what its weights are cast to."""
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None, help="cast the weights (default: as stored)")
