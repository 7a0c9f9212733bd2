"""`onevision` command: one sub-command per module in this package.

Each module named in COMMANDS defines ``register(subparsers)``, which adds its parser and
sets ``func`` to the function that runs it. A listed module that does not exist (yet) is
left out of the listing; any other import error, a missing dependency included, propagates.

`main()` turns bad input into one line on stderr and exit status 2, whatever the command; see
`onevision.cli.errors` for the exit statuses.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from onevision.cli.errors import EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, describe, input_errors
from onevision.cli.options import EXAMPLES
from onevision.utils.progress import is_terminal

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
    ("compare", "onevision.cli.compare"),
    ("soup", "onevision.cli.soup"),
]


EPILOG = f"""{EXAMPLES}
    onevision demo                                     # the whole recipe on a synthetic world, CPU
    onevision tokens --image 640x480                   # visual tokens of an image and their layout
    onevision train stage1 model.size=debug --print-config
    onevision generate --model ckpt --image cat.jpg --prompt "What is shown?"
    onevision COMMAND --help                           # a command's options and examples

exit status: 0 done; 1 the command found problems (data check: bad records; tokens: over budget);
2 bad usage or input (one line on stderr names the argument or file); 3 internal error (traceback
shown); 130 interrupted. ONEVISION_TRACEBACK=1 shows the traceback of input errors too.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onevision",
        description="Train and run LLaVA-OneVision-style vision-language models.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    """Run one sub-command; usage errors exit through argparse (SystemExit 2) as usual."""
    if not is_terminal(sys.stderr):
        # transformers' and huggingface_hub's own bars (writing shards, loading weights) redraw
        # with carriage returns; in a log they are noise. Read when those libraries are imported.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_INPUT
    _safe_streams()
    prog = " ".join(filter(None, ["onevision", args.command, getattr(args, "data_command", None)]))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except input_errors() as error:
        if os.environ.get("ONEVISION_TRACEBACK"):
            raise
        print(f"{prog}: error: {describe(error)}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as error:
        # Not bad input: a bug. Show where, and say so on the last line.
        traceback.print_exc()
        print(f"{prog}: internal error (please report it with the traceback above): {describe(error)}", file=sys.stderr)
        return EXIT_INTERNAL


def _safe_streams() -> None:
    """Print names that are not valid UTF-8 as escapes instead of failing on them."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


if __name__ == "__main__":
    sys.exit(main())
