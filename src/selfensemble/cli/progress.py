"""The CLI's rendering of library progress (``selfensemble.pipeline.progress.Progress``).

On a terminal each phase is a rich bar (done / total, elapsed, ETA). When stdout is not a
terminal (a log file, a batch job) a bar is never drawn, so each phase prints plain lines instead:
one at its start, one whenever another tenth is done, one every ``interval`` seconds even while
nothing finishes (a heartbeat thread: one engine batch can take minutes), and one at its end,
with the same phase names the bar shows. A phase's ``detail`` (what it is doing right now, e.g. the
paraphrase writer's round) is shown after the bar, and at the end of each plain line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from rich.console import Console


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ConsoleProgress:
    """``Progress`` on a rich console: a bar when ``console.is_terminal``, plain lines otherwise."""

    def __init__(self, console: Console | None = None, interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, heartbeat: bool = True):
        self.console = console or Console()
        self.interval, self.clock, self.heartbeat = interval, clock, heartbeat
        self._bar = None
        self._phase: str | None = None
        self._detail = ""
        self._lock = threading.Lock()  # advance (main thread) and the heartbeat both print
        self._stop = threading.Event()

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal

    def start(self, phase: str, total: int, done: int = 0, unit: str = "items") -> None:
        self.end()
        self._phase, self.total, self.done, self.unit = phase, total, done, unit
        self._detail = ""
        self._t0 = self._last = self.clock()
        self._first = done
        if self.interactive:
            self._bar = _bar(self.console)
            self._bar.start()
            self._task = self._bar.add_task(f"{phase:>12}", total=total, completed=done, detail="")
        else:
            self._step = max(total // 10, 1)
            self._next = done + self._step
            self._line("start")
            self._stop = threading.Event()
            if self.heartbeat:
                threading.Thread(target=self._heartbeat, args=(self._stop,), daemon=True).start()

    def advance(self, n: int = 1) -> None:
        if self._phase is None:
            return
        self.done += n
        if self._bar is not None:
            self._bar.advance(self._task, n)
            return
        with self._lock:
            if self.done < self.total and (self.clock() - self._last >= self.interval or self.done >= self._next):
                self._line("")  # (the last one is end()'s "done" line)
                self._next = (self.done // self._step + 1) * self._step

    def detail(self, text: str) -> None:
        """What the phase is doing now: after the bar, or at the end of the next plain line."""
        if self._phase is None:
            return
        if self._bar is not None:
            self._bar.update(self._task, detail=text)
        with self._lock:
            self._detail = text

    def end(self) -> None:
        if self._phase is None:
            return
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        else:
            self._stop.set()
            with self._lock:
                self._line("done" if self.done >= self.total else "stopped")
        self._phase = None

    def note(self, message: str) -> None:
        self.console.print(message, soft_wrap=not self.interactive)  # a log line is never broken mid-path

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(min(self.interval, 1.0)):
            with self._lock:
                if not stop.is_set() and self.clock() - self._last >= self.interval:
                    self._line("")

    def _line(self, what: str) -> None:
        self._last = now = self.clock()
        elapsed = now - self._t0
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        text = f"{self._phase}: {what + ' ' if what else ''}{self.done}/{self.total} {self.unit}{pct}, " \
               f"elapsed {_clock(elapsed)}"
        rate = (self.done - self._first) / elapsed if elapsed > 0 else 0
        if what != "done" and rate > 0:
            text += f", ETA {_clock((self.total - self.done) / rate)}"
        if what != "done" and self._detail:
            text += f" ({self._detail})"
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)


def _bar(console: Console):
    """The rich progress bar every long phase shows on a terminal (done / total, elapsed, ETA)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[detail]}", style="dim", markup=False),
                    console=console, transient=False)
