"""Options several commands share, so they read the same everywhere."""

from __future__ import annotations

import argparse


def add_model_source(parser: argparse.ArgumentParser, debug_help: str) -> None:
    """--model FOLDER or --model-size debug (exactly one)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="checkpoint folder (weights, config.json and tokenizer files)")
    source.add_argument("--model-size", choices=["debug"], help=debug_help)
