"""`onevision` command: one sub-command per module in this package.

Each module named in COMMANDS defines ``register(subparsers)``, which adds its parser and
sets ``func`` to the function that runs it. A listed module that does not exist (yet) is
left out of the listing; any other import error, a missing dependency included, propagates.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (command, module) pairs, in the order `--help` lists them.
COMMANDS = [
    ("tokens", "onevision.cli.tokens"),
    ("convert", "onevision.cli.convert"),
    ("generate", "onevision.cli.generate"),
    ("video-qa", "onevision.cli.video_qa"),
    ("eval", "onevision.cli.eval"),
    ("data", "onevision.cli.data"),
    ("world", "onevision.cli.world"),
    ("train", "onevision.cli.train"),
    ("demo", "onevision.cli.demo"),
    ("transfer", "onevision.cli.transfer"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onevision",
        description="Train and run LLaVA-OneVision-style vision-language models.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _name, module in COMMANDS:
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name == module:
                continue
            raise
        loaded.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
