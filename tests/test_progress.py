"""Progress rendering: plain lines when stdout is not a terminal, a bar (and no plain lines) on one."""

from __future__ import annotations

import io

from rich.console import Console

from selfensemble.cli.progress import ConsoleProgress
from selfensemble.pipeline.progress import ConsoleNotes, NullProgress, Progress, as_progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _plain(interval: float = 30.0):
    buf, clock = io.StringIO(), Clock()
    console = Console(file=buf, force_terminal=False, width=200)
    return ConsoleProgress(console, interval, clock, heartbeat=False), buf, clock


def test_log_file_gets_start_every_tenth_and_end_lines():
    p, buf, clock = _plain()
    p.start("paraphrasing", 100, unit="candidates")
    for _ in range(100):
        clock.t += 0.1
        p.advance()
    p.end()
    lines = buf.getvalue().splitlines()
    assert lines[0] == "paraphrasing: start 0/100 candidates (0%), elapsed 0:00:00"
    assert lines[-1] == "paraphrasing: done 100/100 candidates (100%), elapsed 0:00:10"
    middle = lines[1:-1]
    assert [line.split()[1] for line in middle] == [f"{k}/100" for k in range(10, 100, 10)]
    assert "ETA 0:00:09" in middle[0]  # 10 done in 1 s, 90 to go


def test_log_file_gets_a_line_every_interval_even_when_slow():
    p, buf, clock = _plain(interval=30)
    p.start("confidence", 1000, done=400, unit="questions")  # resumed: 400 already done
    for _ in range(3):
        clock.t += 31
        p.advance()
    p.end()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("confidence: start 400/1000")
    assert [line.split()[1] for line in lines[1:4]] == ["401/1000", "402/1000", "403/1000"]
    assert lines[-1].startswith("confidence: stopped 403/1000")  # ended early: says so


def test_log_file_gets_heartbeat_lines_while_nothing_finishes():
    """One engine batch can take minutes: the log still hears from the phase every interval."""
    import time

    buf = io.StringIO()
    p = ConsoleProgress(Console(file=buf, force_terminal=False, width=200), interval=0.1)
    p.start("paraphrasing", 10, unit="candidates")
    deadline = time.monotonic() + 20
    while buf.getvalue().count("paraphrasing: 0/10") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    p.end()
    lines = buf.getvalue().splitlines()
    assert [line.split()[1] for line in lines[:3]] == ["start", "0/10", "0/10"], lines
    assert lines[-1].startswith("paraphrasing: stopped 0/10")


def test_terminal_draws_a_bar_and_no_plain_lines():
    buf = io.StringIO()
    p = ConsoleProgress(Console(file=buf, force_terminal=True, width=120), clock=Clock())
    p.start("origin", 4, unit="questions")
    p.advance(4)
    p.end()
    out = buf.getvalue()
    assert "origin" in out and "4/4" in out
    assert "start" not in out and "done 4/4" not in out


def test_library_defaults_never_print(capsys):
    p = as_progress()
    assert isinstance(p, NullProgress) and isinstance(p, Progress)
    p.start("x", 3)
    p.advance()
    p.note("hello")
    p.end()
    assert capsys.readouterr() == ("", "")
    console = Console(file=io.StringIO())
    assert isinstance(as_progress(console=console), ConsoleNotes)
