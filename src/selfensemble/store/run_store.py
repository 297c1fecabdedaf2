"""Resumable, append-only run store.

A run directory holds:

  results.jsonl   one JSON object per finished item, appended and fsync'd one line at a time,
                  so a killed run loses at most the line it was writing;
  metrics.json    aggregate metrics, rewritten atomically;
  manifest.json   the run's config plus provenance (versions, source commit, attention key, seed, host, times),
                  rewritten atomically.

Re-running with the same directory skips the ids already in ``results.jsonl``. That is only
sound when the settings that shape answers are unchanged, so :meth:`RunStore.open` refuses a
config that differs from the stored one on any key outside :data:`VOLATILE_KEYS`, except a data
location (a moved data folder: ``store.moved``, recorded in the session as ``data_moved``); the
caller then checks the stored items against the data (store_config.item_differences).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfensemble.errors import SelfEnsembleError
from selfensemble.fileio import atomic_write_text
from selfensemble.store.provenance import attention_paths, check_resume, package_versions, source
from selfensemble.store.resume import VOLATILE_KEYS, same_settings
from selfensemble.store.resume import json_default as _json_default
from selfensemble.store.resume import jsonable as _jsonable

__all__ = ["Resumable", "RunStore", "atomic_write_json", "check_resumable", "is_run_dir", "load_run"]

RESULTS = "results.jsonl"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
LOCK = ".lock"

def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON so readers see the old file or the new one, never a half-written one (mode: the umask's)."""
    text = json.dumps(data, indent=2, sort_keys=True, default=_json_default, ensure_ascii=False) + "\n"
    atomic_write_text(path, text)


@dataclass
class _Parsed:
    records: list[dict]
    good_bytes: int  # length of the prefix made of complete, valid lines
    removed: bytes  # the corrupt tail (b"" when none)
    removed_line: int  # 1-based line number where the corrupt tail starts (0 when none)


def _parse_results(path: Path) -> _Parsed:
    """Parse results.jsonl; a bad last line is reported as a tail to drop, a bad middle line is an error.

    Only the last line can be damaged by a kill (appends are whole lines followed by fsync), so
    damage anywhere else means the file was edited or the disk lied; dropping it silently would
    hide lost results.
    """
    if not path.exists():
        return _Parsed([], 0, b"", 0)
    data = path.read_bytes()
    records: list[dict] = []
    seen: set[str] = set()
    offset = 0
    lineno = 0
    while offset < len(data):
        lineno += 1
        end = data.find(b"\n", offset)
        complete = end != -1
        line = data[offset:end] if complete else data[offset:]
        next_offset = end + 1 if complete else len(data)
        is_last = next_offset >= len(data)
        problem = None
        record = None
        if not complete:
            problem = "no trailing newline (write interrupted)"
        elif line.strip():
            try:
                record = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                problem = f"invalid JSON ({e})"
            else:
                if not isinstance(record, dict) or "id" not in record:
                    problem = 'not a JSON object with an "id"'
        if problem is not None:
            if is_last:
                return _Parsed(records, offset, data[offset:], lineno)
            raise SelfEnsembleError(
                f"{path}: line {lineno} is corrupt ({problem}) but is not the last line, so it was not "
                f"left by an interrupted write. Fix or remove that line by hand; refusing to drop results silently."
            )
        if record is not None:
            rid = str(record["id"])
            if rid in seen:
                raise SelfEnsembleError(f"{path}: line {lineno} repeats id {rid!r}; each item must appear once.")
            seen.add(rid)
            records.append(record)
        offset = next_offset
    return _Parsed(records, offset, b"", 0)


def _preview(raw: bytes, limit: int = 120) -> str:
    text = raw.decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "…"


# One advisory lock per run directory per process: a second *process* on the same directory is
# refused (its repair could truncate a line the first is writing), while several RunStore objects
# in one process share the lock so re-opening a run in the same program just works.
_HELD_LOCKS: dict[str, list] = {}


def _acquire_lock(directory: Path) -> str | None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, run unguarded
        return None
    key = str(directory.resolve())
    held = _HELD_LOCKS.get(key)
    if held is not None:
        held[1] += 1
        return key
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise SelfEnsembleError(
            f"{directory} is in use by another process (lock {directory / LOCK}); "
            "wait for it to finish or choose another --out."
        ) from None
    _HELD_LOCKS[key] = [fd, 1]
    return key


def _release_lock(key: str | None) -> None:
    if key is None or key not in _HELD_LOCKS:
        return
    held = _HELD_LOCKS[key]
    held[1] -= 1
    if held[1] <= 0:
        del _HELD_LOCKS[key]
        os.close(held[0])  # closing the descriptor releases the flock


class RunStore:
    """One run directory: skip finished items on resume, append new ones durably.

    Use as ``with RunStore(path, config) as store:`` or call :meth:`open` / :meth:`close`.
    ``store.repairs`` lists what :meth:`done_ids` cut off a damaged results file.
    ``attention_path`` is this session's attention paths ({"prefill": key, "decode": key}; one key or an
    older sentence is read as provenance.attention_paths reads it); with the library versions they must match
    the stored run's on resume unless ``allow_mixed`` (see provenance.py); ``store.mixed`` then
    says this session differs, and :meth:`append` stamps its provenance on every record.
    ``upgrade`` (stored config → config) reads a manifest written in an older form before it is
    compared (run_config.nested_config for experiment runs); the resumed manifest is then rewritten
    in the given form.
    """

    def __init__(self, path: Path | str, config: dict, volatile_keys: Iterable[str] = VOLATILE_KEYS, *,
                 attention_path: str | dict | None = None, allow_mixed: bool = False,
                 upgrade: Callable[[dict], dict] | None = None):
        self.path = Path(path)
        self.config = dict(config)
        self.upgrade = upgrade
        self.volatile_keys = frozenset(volatile_keys)
        # attention_path holds the stable keys per phase (provenance.attention_paths maps older forms)
        self.session = {"versions": package_versions(), "source": source(),
                        "attention_path": attention_paths(attention_path)}
        self.allow_mixed = allow_mixed
        self.mixed = False
        self.repairs: list[str] = []
        self.moved: dict[str, tuple] = {}  # data locations that differ from the stored run's (store_config)
        self._ids: set[str] | None = None
        self._fh = None
        self._lock_key: str | None = None
        self._opened = False

    # -- paths -------------------------------------------------------------------------------
    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def learn_attention_path(self, attention_path: str | dict) -> None:
        """Set this session's attention path once known (a Ray pool learns it from its first answers),
        with the same resume check :meth:`open` makes when it is known up front."""
        manifest = self._read_manifest() or {}
        stored = {**manifest, "attention_path": manifest.get("attention_path")}
        attention_path = attention_paths(attention_path)
        self.session["attention_path"] = attention_path
        self.mixed = check_resume(self.path, stored, self.session, self.allow_mixed) or self.mixed
        if manifest.get("attention_path") is None:
            self.update_manifest(attention_path=attention_path)

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> RunStore:
        """Create or resume the run; refuses to resume under different run-defining settings."""
        if self._opened:
            return self
        if self.path.exists() and not self.path.is_dir():
            raise SelfEnsembleError(f"{self.path} exists and is not a directory.")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_key = _acquire_lock(self.path)
        try:
            manifest = self._read_manifest()
            now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            if manifest is not None:
                self.moved = same_settings(self.path, manifest, self.config, self.volatile_keys, self.upgrade)
                _key_legacy_attention(manifest)
                self.mixed = check_resume(self.path, manifest, self.session, self.allow_mixed)
                manifest["config"] = _jsonable(self.config)
                manifest["resumed_at"] = [*manifest.get("resumed_at", []), now]
                manifest["mixed"] = bool(manifest.get("mixed")) or self.mixed
            else:  # versions and attention path are the first session's and are never overwritten
                manifest = {
                    "config": _jsonable(self.config),
                    "seed": _seed(self.config),
                    "start_time": now,
                    "hostname": socket.gethostname(),
                    **self.session,
                }
            manifest.setdefault("versions", self.session["versions"])
            if manifest.get("attention_path") is None:
                manifest["attention_path"] = self.session["attention_path"]
            moves = {"data_moved": {k: {"stored": a, "given": b} for k, (a, b) in self.moved.items()}}
            manifest["sessions"] = [*manifest.get("sessions", []),
                                    {"started": now, **self.session, **(moves if self.moved else {})}]
            atomic_write_json(self.manifest_path, manifest)
            self._opened = True
            self.done_ids()
        except BaseException:
            _release_lock(self._lock_key)
            self._lock_key = None
            self._opened = False
            raise
        return self

    def close(self) -> None:
        """Close the results file and release the directory lock."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        _release_lock(self._lock_key)
        self._lock_key = None
        self._opened = False

    def __enter__(self) -> RunStore:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # pragma: no cover - best effort for callers that never close
        with contextlib.suppress(Exception):
            self.close()

    def _require_open(self) -> None:
        if not self._opened:
            self.open()

    # -- results -----------------------------------------------------------------------------
    def done_ids(self) -> set[str]:
        """Ids already finished; repairs a results file whose last line a kill cut short."""
        self._require_open()
        parsed = _parse_results(self.results_path)
        if parsed.removed:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            with open(self.results_path, "r+b") as f:
                f.truncate(parsed.good_bytes)
                f.flush()
                os.fsync(f.fileno())
            msg = (f"{self.results_path}: removed an incomplete last line (line {parsed.removed_line}, "
                   f"{len(parsed.removed)} bytes: {_preview(parsed.removed)!r}); that item will be recomputed.")
            self.repairs.append(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        self._ids = {str(r["id"]) for r in parsed.records}
        return set(self._ids)

    def append(self, record: dict) -> None:
        """Append one finished item and fsync it, so a kill loses at most this line."""
        if "id" not in record:
            raise ValueError('record needs an "id"')
        if self._ids is None:
            self.done_ids()
        assert self._ids is not None
        rid = str(record["id"])
        if rid in self._ids:
            raise ValueError(f"id {rid!r} is already in {self.results_path}")
        if self.mixed:  # a record derived from an earlier one keeps that one's provenance
            record = {"provenance": self.session, **record}
        line = json.dumps(record, ensure_ascii=False, default=_json_default)
        data = (line + "\n").encode("utf-8")
        if self._fh is None:
            self._fh = open(self.results_path, "ab")  # noqa: SIM115 - kept open across appends, closed in close()
        self._fh.write(data)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._ids.add(rid)

    def records(self) -> list[dict]:
        """All finished records in file order."""
        self._require_open()
        if self._fh is not None:
            self._fh.flush()
        parsed = _parse_results(self.results_path)
        if parsed.removed:  # only reachable if something else wrote here; repair the same way
            self.done_ids()
            parsed = _parse_results(self.results_path)
        return parsed.records

    # -- metrics / manifest ------------------------------------------------------------------
    def write_metrics(self, metrics: dict) -> None:
        """Replace metrics.json atomically."""
        self._require_open()
        atomic_write_json(self.metrics_path, metrics)

    def update_manifest(self, **fields: Any) -> dict:
        """Merge fields (e.g. wall_time, attention_path) into manifest.json atomically; returns the manifest."""
        self._require_open()
        manifest = self._read_manifest() or {}
        manifest.update(fields)
        atomic_write_json(self.manifest_path, manifest)
        return manifest

    def manifest(self) -> dict:
        self._require_open()
        return self._read_manifest() or {}

    def _read_manifest(self) -> dict | None:
        if not self.manifest_path.exists():
            return None
        return _read_json(self.manifest_path, "manifest")


@dataclass
class Resumable:
    """What :func:`check_resumable` found in a run folder: its finished records and moved data locations."""

    records: list[dict]
    moved: dict[str, tuple]


def check_resumable(path: Path | str, config: dict, volatile_keys: Iterable[str] = VOLATILE_KEYS, *,
                    upgrade: Callable[[dict], dict] | None = None, allow_mixed: bool = False) -> Resumable:
    """Would :meth:`RunStore.open` accept ``path`` with ``config``? Checked without writing anything,
    so a caller can refuse a run before its slow part (loading a model).

    Raises what ``open`` would raise for settings, library versions (the attention path is known
    only once a model runs, so it is checked at ``open``), a results file damaged before its last
    line, or a folder another process is writing; returns the stored records (none for a new folder).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SelfEnsembleError(f"{path} exists and is not a directory.")
    manifest = _read_json(path / MANIFEST, "manifest") if (path / MANIFEST).is_file() else None
    if manifest is None:
        return Resumable([], {})
    moved = same_settings(path, manifest, config, volatile_keys, upgrade)
    check_resume(path, {**manifest, "attention_path": None}, {"versions": package_versions()}, allow_mixed)
    _check_unlocked(path)
    return Resumable(_parse_results(path / RESULTS).records, moved)


def _check_unlocked(directory: Path) -> None:
    """Refuse, as ``open`` would, a run folder whose lock another process holds (this one's are fine)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks
        return
    if str(directory.resolve()) in _HELD_LOCKS or not (directory / LOCK).is_file():
        return
    fd = os.open(directory / LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        raise SelfEnsembleError(
            f"{directory} is in use by another process (lock {directory / LOCK}); "
            "wait for it to finish or choose another --out.") from None
    finally:
        os.close(fd)


def _seed(config: dict) -> Any:
    """The run's seed: a flat config's "seed", else its load section's (run_config: load.seed owns it)."""
    load = config.get("load")
    return load.get("seed") if "seed" not in config and isinstance(load, dict) else config.get("seed")


def _key_legacy_attention(manifest: dict) -> None:
    """A run folder from before the phases were keyed stored one key, or earlier the human sentence:
    keep a sentence as ``attention_note`` and store the keys per phase (done once; the rewritten
    manifest holds {"prefill": ..., "decode": ...} from then on)."""
    path = manifest.get("attention_path")
    if isinstance(path, str):
        if attention_paths(path)["prefill"] != path:
            manifest.setdefault("attention_note", path)
        manifest["attention_path"] = attention_paths(path)


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SelfEnsembleError(f"{path}: the {what} is not valid JSON ({e}).") from None
    if not isinstance(data, dict):
        raise SelfEnsembleError(f"{path}: the {what} should be a JSON object, got {type(data).__name__}.")
    return data


def is_run_dir(path: Path | str) -> bool:
    """A run directory is one with a results file (a run killed before its first item has none yet)."""
    return (Path(path) / RESULTS).is_file()


def load_run(path: Path | str) -> tuple[dict, list[dict], dict]:
    """(manifest, records, metrics) of a run, read-only, for reports.

    A damaged last line is skipped with a warning but left on disk: the run may still be writing
    it, and only the writer should repair its own file. Missing metrics read as {} (a run that was
    interrupted writes them only at the end).
    """
    path = Path(path)
    if not path.is_dir():
        raise SelfEnsembleError(f"{path}: no such run directory.")
    results = path / RESULTS
    if not results.is_file():
        raise SelfEnsembleError(f"{path}: not a run directory (no {RESULTS}).")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise SelfEnsembleError(f"{path}: {MANIFEST} is missing, so the run's method and settings are unknown.")
    manifest = _read_json(manifest_path, "manifest")
    parsed = _parse_results(results)
    if parsed.removed:
        warnings.warn(
            f"{results}: ignoring an incomplete last line (line {parsed.removed_line}, "
            f"{len(parsed.removed)} bytes); the run was interrupted or is still writing.",
            RuntimeWarning,
            stacklevel=2,
        )
    metrics_path = path / METRICS
    metrics = _read_json(metrics_path, "metrics") if metrics_path.is_file() else {}
    return manifest, parsed.records, metrics
