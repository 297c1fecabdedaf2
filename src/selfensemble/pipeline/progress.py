"""How long-running library calls report progress without printing anything themselves.

``run_experiment`` and ``paraphrase_items`` take a ``Progress``: each long phase (loading,
paraphrasing, confidence, each method) is ``start(phase, total)``, ``advance(n)``… ``end()``, and
one-off messages go to ``note``. The CLI renders it (``cli/progress.py``: a bar on a terminal, plain
lines in a log file); library users get ``NullProgress``, or their own object with these methods.

An object may also have ``detail(text)``: what the current phase is doing right now (e.g. the
paraphrase writer's "top-up round 2/3: 1 question; 6 candidates"), shown beside its count until the
next detail; ``show_detail`` calls it where it exists and does nothing otherwise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

log = logging.getLogger("selfensemble")


@runtime_checkable
class Progress(Protocol):
    def start(self, phase: str, total: int, done: int = 0, unit: str = "items") -> None:
        """A phase begins: ``total`` units of work, ``done`` of them already finished (a resumed run)."""

    def advance(self, n: int = 1) -> None:
        """``n`` more units of the current phase are finished."""

    def end(self) -> None:
        """The current phase is over (also called when it stops early)."""

    def note(self, message: str) -> None:
        """A one-off message for the user (may hold rich markup such as ``[yellow]…[/]``)."""


class NullProgress:
    """No bars; notes go to the ``selfensemble`` logger (silent unless logging is configured)."""

    def start(self, phase: str, total: int, done: int = 0, unit: str = "items") -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def end(self) -> None:
        pass

    def note(self, message: str) -> None:
        log.info(message)

    def detail(self, text: str) -> None:
        pass


def show_detail(progress: Progress, text: str) -> None:
    """``progress.detail(text)`` if the object has one (it is optional; see the module docstring)."""
    detail = getattr(progress, "detail", None)
    if callable(detail):
        detail(text)


class ConsoleNotes(NullProgress):
    """Notes printed on a console-like object (anything with ``print``), no bars: what passing only
    ``console=`` to ``run_experiment`` gives (the bars are the CLI's to draw)."""

    def __init__(self, console):
        self.console = console

    def note(self, message: str) -> None:
        self.console.print(message)


def as_progress(progress=None, console=None) -> Progress:
    """``progress`` if given, else notes on ``console`` if given, else ``NullProgress``."""
    if progress is not None:
        if not isinstance(progress, Progress):
            raise TypeError(f"progress must have start/advance/end/note, got {type(progress).__name__}")
        return progress
    if console is not None:
        return console if isinstance(console, Progress) else ConsoleNotes(console)
    return NullProgress()


@contextlib.contextmanager
def phase(progress: Progress, name: str, total: int, done: int = 0, unit: str = "questions") -> Iterator[Progress]:
    """One phase of ``progress`` around a block: started with ``done`` of ``total`` units already
    finished (a resumed run), ended however the block leaves (finished, an error, Ctrl-C)."""
    progress.start(name, total, done=done, unit=unit)
    try:
        yield progress
    finally:
        progress.end()


class NotesConsole:
    """A console-like object (``print``, ``status``) whose messages become ``progress`` notes: what
    the backends print their load messages on. No spinner: the loading phase is ``progress``'s."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def print(self, message: str, *args, **kwargs) -> None:
        self.progress.note(message)

    def status(self, message: str, *args, **kwargs):
        return contextlib.nullcontext()
