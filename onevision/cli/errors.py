"""How `onevision` commands report bad input: one line on stderr, never a traceback.

Exit status, the same for every sub-command:

* 0: done;
* 1: the command ran and found problems (`data check`: bad records; `tokens`: over budget);
* 2: bad usage or bad input (an argument, a missing or unreadable file, a broken checkpoint,
  recipe or record file): one line ``onevision CMD: error: MESSAGE`` naming what is wrong;
* 3: an internal error (a bug): the traceback is printed, then one line saying so;
* 130: interrupted (Ctrl-C).

`main()` catches `input_errors()` around the command. Commands raise `InputError` for what
they check themselves and wrap file reading in `reading(label, path)`, so an error from a
library (a JSON or safetensors parser, say) still names the argument and file it came from;
`loading(label, path)` does the same for a model folder loaded through transformers, where a
malformed config may fail with any error type. Options that size an allocation use
`bounded_int`. Setting ONEVISION_TRACEBACK=1 re-raises instead, for debugging a case that
looks like bad input.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

EXIT_OK, EXIT_FOUND, EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class InputError(ValueError):
    """Bad input a command found; the message names the argument or file."""


def input_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input from outside the program, not a bug in it.

    The project's own errors (CheckpointError, RecordError, RecipeError, ConfigError, BudgetError
    ...) are ValueErrors; MediaError, TrainError, YAML and safetensors parse errors are not.
    """
    import yaml
    from safetensors import SafetensorError

    from onevision.data.media import MediaError
    from onevision.train.errors import TrainError  # a run stopped for a reason the user must act on

    return (ValueError, OSError, MediaError, TrainError, yaml.YAMLError, SafetensorError)


def printable(text: str) -> str:
    """`text` safe to print anywhere: file-name bytes that are not UTF-8 shown as \\xNN.

    Python decodes such bytes in names to lone surrogates ('\\udcff'), which a UTF-8 stream
    refuses to encode; other lone surrogates (a JSON "\\ud800") are written as \\udNNN.
    """
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def show_path(path: str | os.PathLike | bytes) -> str:
    """A path as text for messages and output files (undecodable bytes as \\xNN)."""
    return printable(os.fsdecode(path))


MAX_MESSAGE = 2000
"""Longest message printed: a checkpoint missing every key would otherwise print 50 kB on one line."""


def describe(error: BaseException) -> str:
    """One line for `error`: its message with newlines folded, the file named for OSErrors.

    Errors from outside the project (JSON, YAML, Unicode, safetensors) keep their type name,
    which says more than their message alone ("Expecting value: line 1 column 1"); plain
    ValueErrors and OSErrors carry messages written for the reader and print as they are.
    Past MAX_MESSAGE characters the message is cut, saying how much was left out.
    """
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        text = f"{show_path(error.filename)}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
        if not type(error).__module__.startswith("onevision") and type(error) is not ValueError and not isinstance(error, OSError):
            text = f"{type(error).__name__}: {text}"
    text = printable(" ".join(line.strip() for line in text.splitlines() if line.strip()))
    if len(text) > MAX_MESSAGE:
        text = f"{text[:MAX_MESSAGE]} ... [{len(text) - MAX_MESSAGE} more characters; ONEVISION_TRACEBACK=1 shows all]"
    return text


@contextmanager
def reading(label: str, path: str | os.PathLike | None) -> Iterator[None]:
    """Re-raise bad-input errors from the block as `InputError` naming `label` and `path`.

    An `InputError`, or a message that already names the path, passes unchanged; so does
    everything when `path` is None (the option was not given).
    """
    try:
        yield
    except InputError:
        raise
    except input_errors() as error:
        text = describe(error)
        if path is None or show_path(path) in text:
            raise
        raise InputError(f"{label} {show_path(path)}: {text}") from error


@contextmanager
def loading(label: str, path: str | os.PathLike | None) -> Iterator[None]:
    """`reading` for a model folder loaded through third-party code: any error is bad input.

    transformers fails on a malformed config.json or tokenizer file with whatever error the bad
    value leads to (a TypeError, an AttributeError, a RuntimeError for a negative size); the
    folder is the user's input, so the error is reported as one line naming it and the error's
    type. ONEVISION_TRACEBACK=1 re-raises, for the rare case that is a bug of ours. With `path`
    None (a random debug model, no folder read) nothing is caught.
    """
    try:
        with reading(label, path):
            yield
    except input_errors():  # already named by `reading`
        raise
    except Exception as error:
        if path is None or os.environ.get("ONEVISION_TRACEBACK"):
            raise
        raise InputError(f"{label} {show_path(path)}: cannot load it: {describe(error)}") from error


def bounded_int(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high]; the bound is in the message.

    Every option that sizes an allocation (frames, batch, tokens, workers) has an upper bound,
    so a typo such as an extra zero fails at once instead of exhausting memory.
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f">= {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"expected an integer {span}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def bounded_float(low: float, high: float | None = None, *, low_open: bool = False):
    """An argparse type: a finite float in [low, high] ((low, high] with `low_open`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if math.isnan(value) or too_low or (high is not None and value > high):
            span = f"{'>' if low_open else '>='} {low}" + ("" if high is None else f" and <= {high}")
            raise argparse.ArgumentTypeError(f"expected a number {span}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def text(value: str) -> str:
    """An argparse type: text that is valid Unicode (bytes that are not UTF-8 are refused).

    Python turns such bytes in an argument into lone surrogates, which no tokenizer encodes.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"not valid UTF-8 text: {printable(value)!r}") from None
    return value


def check_output_file(option: str, path: os.PathLike) -> None:
    """Refuse an output file path that cannot be written: a folder, or under a file.

    Checked before the work that produces the file, not after it.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {show_path(path)} is a folder; give a file name")
    ancestor = next((parent for parent in path.parents if parent.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise InputError(f"{option} {show_path(path)}: {show_path(ancestor)} is a file, not a folder")
