"""One JSON object on disk that several processes can add entries to at the same time.

The paraphrase and confidence caches are each one ``{key: entry}`` JSON file. Two runs sharing a
cache (two datasets, or two methods started as separate commands) used to rewrite the whole file
from their in-memory copy, so the last writer dropped the other's entries. Here every write takes
an exclusive ``fcntl.flock`` on a sidecar ``<file>.lock``, re-reads the file, merges the new entries
into what is on disk and replaces the file atomically (temp file + ``os.replace``): readers see the
old file or the new one, never half of one, and no writer's entries are lost.

A file that is not a JSON object is refused with its path and what to do (delete or move it);
it is never silently replaced, since that would discard every entry a long run wrote.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selfensemble.errors import SelfEnsembleError
from selfensemble.store import atomic_write_json


def lock_path(path: Path) -> Path:
    """The sidecar file that writers of ``path`` lock (the data file itself is replaced, so it can't be)."""
    return path.with_name(path.name + ".lock")


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
    """The file's object, {} when there is no file; a corrupt file raises SelfEnsembleError naming it."""
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


def merge(path: Path, entries: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Add ``entries`` to the file under its lock; returns everything the file now holds.

    Entries already on disk that ``entries`` does not name are kept (another process wrote them);
    a key in both takes the new value (entries are deterministic per key, so both are the same).
    """
    with locked(path):
        data = read(path, what)
        data.update(entries)
        atomic_write_json(path, data)
    return data


def _corrupt(path: Path, what: str, why: str) -> SelfEnsembleError:
    return SelfEnsembleError(
        f"The {what} cache {path} is {why}. It is not overwritten, since that would discard every entry in "
        f"it: delete it (its entries are recomputed) or move it away, then rerun.")
