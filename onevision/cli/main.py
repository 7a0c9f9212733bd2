"""`onevision` command: one sub-command per module in this package.

Each module named in COMMANDS defines ``register(subparsers)``, which adds its parser and
sets ``func`` to the function that runs it. Modules are imported only when listed, so a
missing optional dependency of one command does not break the others.
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
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onevision",
        description="Train and run LLaVA-OneVision-style vision-language models.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _name, module in COMMANDS:
        importlib.import_module(module).register(subparsers)
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
