"""A ``{key: entry}`` cache on disk that several processes add entries to at the same time.

The paraphrase and confidence caches used to be one JSON file that each run rewrote whole from
its in-memory copy, once at the end: a killed run lost everything, and of two runs sharing a file
the last writer dropped the other's entries. Here a cache is two files:

  ``<name>.json``          a JSON object, the entries up to the last compaction
  ``<name>.json.journal``  one ``[key, entry]`` JSON line per entry added since, appended per batch

Every access holds an exclusive ``fcntl.flock`` on a sidecar ``<name>.json.lock``, so appends of two
processes never interleave and nobody reads half a compaction. An append is one write + fsync, so
saving a batch costs the batch, not the whole cache (rewriting a 10,000-question gated paraphrase
cache took 2.8 s per batch). Opening a cache folds its journal into the object (written atomically:
temp file + ``os.replace``), so the journal stays short.

A writer killed in the middle of an append leaves an unfinished last line (no newline): that
batch was never saved, and the next writer cuts it off. Anything else that does not parse (the
object, or a complete journal line) is refused with the file's path and what to do; it is never
silently replaced, since that would discard every entry a long run wrote.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selfensemble.errors import SelfEnsembleError
from selfensemble.store.run_store import atomic_write_json


def lock_path(path: Path) -> Path:
    """The sidecar file every access to ``path`` locks (the data file itself is replaced, so it can't be)."""
    return path.with_name(path.name + ".lock")


def journal_path(path: Path) -> Path:
    return path.with_name(path.name + ".journal")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``path`` (blocks while another process holds it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path(path), "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read(path: Path, what: str) -> dict[str, Any]:
    """Every entry (object, then journal; {} when neither exists), after folding the journal into
    the object. A corrupt file raises SelfEnsembleError naming it."""
    if not path.exists() and not journal_path(path).exists():
        return {}
    with locked(path):
        data = _read_object(path, what)
        added = _read_journal(journal_path(path), what)
        if added:
            data.update(added)
            atomic_write_json(path, data)
            os.truncate(journal_path(path), 0)  # after the object holds them: a crash in between re-adds, never loses
    return data


def merge(path: Path, entries: Mapping[str, Any], what: str) -> None:
    """Append ``entries`` to the cache durably (one write + fsync). Entries other processes wrote
    are kept; a key written twice takes the later value (entries are deterministic per key)."""
    if not entries:
        return
    text = "".join(json.dumps([k, v], sort_keys=True, ensure_ascii=False) + "\n" for k, v in entries.items())
    with locked(path), open(journal_path(path), "a+b") as fh:
        _cut_unfinished_line(fh)
        _append(fh, text.encode("utf-8"))


def _append(fh, data: bytes) -> None:
    fh.write(data)
    fh.flush()
    os.fsync(fh.fileno())


def _cut_unfinished_line(fh) -> None:
    """Drop what a writer killed mid-append left after the last newline (its batch was not saved)."""
    size = fh.seek(0, os.SEEK_END)
    if size == 0:
        return
    fh.seek(max(size - 65536, 0))
    tail = fh.read()
    if tail.endswith(b"\n"):
        return
    cut = tail.rfind(b"\n")
    if cut < 0 and size > len(tail):  # a line longer than the window: find its start the slow way
        fh.seek(0)
        whole = fh.read()
        keep = whole.rfind(b"\n") + 1
    else:
        keep = size - len(tail) + cut + 1
    fh.truncate(keep)
    fh.seek(0, os.SEEK_END)


def _read_object(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _corrupt(path, what, f"not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise _corrupt(path, what, f"a JSON {type(data).__name__}, not an object")
    return data


def _read_journal(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    lines = raw.split(b"\n")
    out: dict[str, Any] = {}
    for number, line in enumerate(lines[:-1], 1):  # lines[-1]: empty, or a killed writer's unfinished line
        try:
            key, value = json.loads(line)
        except (ValueError, UnicodeDecodeError) as err:
            raise _corrupt(path, what, f"corrupt at line {number} ({err})") from err
        out[key] = value
    return out


def _corrupt(path: Path, what: str, why: str) -> SelfEnsembleError:
    return SelfEnsembleError(
        f"The {what} cache {path} is {why}. It is not overwritten, since that would discard every entry in "
        f"it: delete it (its entries are recomputed) or move it away, then rerun.")
