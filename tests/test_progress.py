"""Progress bars: redrawn in place on a terminal, whole lines (few, no carriage returns) in a log."""

from __future__ import annotations

import io

from onevision.utils import progress as progress_module
from onevision.utils.progress import LineWriter, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_whole_lines_not_carriage_returns():
    log = io.StringIO()
    for _ in progress_bar(range(20_000), desc="checking samples", unit="sample", file=log):
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # The first state and the last; a fast loop gets nothing between (one line per LOG_INTERVAL).
    assert 1 < len(lines) <= 3, lines
    assert lines[0].startswith("checking samples:") and "0/20000" in lines[0]
    assert lines[-1].startswith("checking samples: 100%") and "20000/20000" in lines[-1]
    assert text.isascii()


def test_a_log_line_per_interval(monkeypatch):
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)
    log = io.StringIO()
    bar = progress_bar(total=5, desc="writing", unit="tensor", file=log)
    for _ in range(5):
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert [line.split("|")[0].split()[-1] for line in lines[:6]] == ["0%", "20%", "40%", "60%", "80%", "100%"]


def test_a_terminal_gets_the_usual_bar():
    screen = Terminal()
    for _ in progress_bar(range(3), desc="steps", file=screen):
        pass
    assert "\r" in screen.getvalue() and "3/3" in screen.getvalue()


def test_disabled_bars_write_nothing():
    for stream in (io.StringIO(), Terminal()):
        bar = progress_bar(range(10), desc="hidden", file=stream, disable=True)
        assert list(bar) == list(range(10))
        assert stream.getvalue() == ""


def test_line_writer_drops_redraw_padding_and_bare_newlines():
    out = io.StringIO()
    writer = LineWriter(out)
    writer.write("\rstep 1    ")
    writer.write("\n")
    writer.write("\r")
    writer.write("\rstep 2")
    assert out.getvalue() == "step 1\nstep 2\n"


def test_a_log_line_every_interval_of_a_slow_loop():
    clock = [0.0]
    log = io.StringIO()
    bar = progress_bar(total=100, desc="training", unit="step", file=log)
    bar._time = lambda: clock[0]  # tqdm reads its clock through this attribute
    bar.start_t = bar.last_print_t = 0.0
    for _ in range(100):
        clock[0] += 1.0  # one step a second: a line at 30, 60 and 90 s
        bar.update(1)
    # tqdm's monitor thread redraws a bar whose miniters > 1 out of turn; here it never is.
    assert bar.miniters == 1
    bar.close()
    lines = log.getvalue().splitlines()
    assert [line.split("|")[2].split("/")[0].strip() for line in lines] == ["0", "30", "60", "90", "100"]
