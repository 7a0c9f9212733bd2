"""Progress bars that read well both on a terminal and in a log file.

Every progress bar in the project comes from `progress_bar()`. On a terminal it is a plain tqdm bar,
redrawn in place. When the bar's stream is not a terminal (stderr redirected to a log file or a
pipe, as under CI, nohup or a scheduler), tqdm would still redraw in place: one carriage return
per update, thousands of them in a log that never shows them as intended. There the same bar
prints whole lines instead, in ASCII, at most one every LOG_INTERVAL seconds plus the first and
the last, so a log gains a few lines per bar, each saying how far the work got:

    for item in progress_bar(items, desc="checking samples", unit="sample", disable=not show):
        ...

    bar = progress_bar(total=len(requests), desc="generating", unit="request")
    bar.update(1)
    bar.close()

`disable=True` hides the bar wherever it would go (`--no-progress`, `logging.progress: false`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO

from tqdm import tqdm

LOG_INTERVAL = 30.0
"""Seconds between two lines of a bar written to a stream that is not a terminal."""


class LineWriter:
    """A stream for tqdm that turns its in-place redraws into whole lines.

    tqdm writes each state as ``"\\r" + text + padding`` and a bare ``"\\n"`` when it closes; here
    each non-empty state becomes one line and the bare newlines are dropped.
    """

    def __init__(self, stream: IO[str]):
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def is_terminal(stream: IO[str] | None) -> bool:
    """Whether `stream` is an interactive terminal (a closed or odd stream counts as not)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(
    iterable: Iterable | None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    disable: bool = False,
    file: IO[str] | None = None,
    **options,
) -> tqdm:
    """A tqdm bar over `iterable` (or one moved with `.update(n)`), shaped for where it is written.

    Args:
        iterable: what to iterate over; None for a bar moved by hand (then give `total`).
        desc: what the bar counts, shown first on each line.
        total: the number of steps (default: `len(iterable)` where it has one).
        unit: the name of one step ("sample", "step", "tensor").
        disable: hide the bar (the options --no-progress and `logging.progress: false`).
        file: the stream to write to (default: sys.stderr, looked up at call time).
        options: further tqdm options (initial, leave, postfix ...).
    """
    stream = sys.stderr if file is None else file
    if is_terminal(stream):
        return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, file=stream, dynamic_ncols=True, **options)
    # Not a terminal: whole ASCII lines, at most one per LOG_INTERVAL (the first and last always).
    # miniters=1 checks the clock on every update; tqdm's default (miniters guessed from the rate)
    # lets its monitor thread redraw out of turn when the rate drops, printing two lines at once.
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        disable=disable,
        file=LineWriter(stream),
        mininterval=LOG_INTERVAL,
        maxinterval=max(LOG_INTERVAL, 10.0),
        miniters=1,
        ascii=True,
        ncols=100,
        **options,
    )
