"""Where a cell's records came from: which package versions and source commits wrote them.

A table cell (one model on one dataset) compares methods run in separate folders, possibly in
several sessions. Its paired differences mean what they say only when every record was produced
by the same code: the same selfensemble / torch / transformers versions and the same committed
source. The store records the source of every session (manifest ``sessions``, with
``items_this_session`` since that field exists) and, for a session resumed under other versions
with ``allow_mixed``, on each record (``provenance``). This module reads them back; the report marks
a cell whose records come from more than one source, from a modified (dirty) tree, or from a source
that was never recorded, and the confirm protocol refuses to add to such a cell unless told to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Key = tuple  # (selfensemble, torch, transformers, commit, dirty)
KEY_FIELDS = ("selfensemble", "torch", "transformers", "commit", "dirty")


def source_key(entry: dict | None) -> Key:
    """The comparable source of a session, a record's ``provenance`` or a manifest: package versions,
    the commit (or "sha256:…" of installed files; None when never recorded) and whether the tree was dirty."""
    entry = entry or {}
    versions = entry.get("versions") or {}
    src = entry.get("source") or {}
    commit = src.get("commit") or (f"sha256:{src['sha256']}" if src.get("sha256") else None)
    return (versions.get("selfensemble"), versions.get("torch"), versions.get("transformers"), commit,
            bool(src.get("dirty")))


def run_sources(manifest: dict, records: Sequence[dict]) -> dict[Key, int | None]:
    """{source: records it wrote (None when the run does not say)} for one run folder.

    Records carrying ``provenance`` count for their own source. The others came from the sessions
    that wrote records: a session with ``items_this_session`` 0 wrote none; one without the field
    (older runs, or a session that was interrupted) may have. When exactly one such source remains
    the rest of the records are its own; with several the split is unknown (None).
    """
    counts: dict[Key, int | None] = {}
    for r in records:
        if isinstance(r.get("provenance"), dict):
            key = source_key(r["provenance"])
            counts[key] = (counts.get(key) or 0) + 1
    sessions = manifest.get("sessions") or [manifest]
    writers = [source_key(s) for s in sessions if s.get("items_this_session") != 0]
    others = [k for k in dict.fromkeys(writers) if k not in counts]
    rest = len(records) - sum(v or 0 for v in counts.values())
    if rest > 0 and not others:  # records without provenance and no session left to own them: the first's
        others = [source_key(sessions[0])]
    for key in others if rest > 0 else []:
        counts[key] = rest if len(others) == 1 else None
    return counts


def cell_provenance(runs: Sequence[tuple[str, dict, Sequence[dict]]]) -> dict[str, Any]:
    """The sources of one cell's runs ``(name, manifest, records)``: a JSON-able dict with
    ``sources`` (each: versions, commit, dirty, the runs it wrote, records or None), ``mixed`` (more
    than one source), ``dirty`` (a modified tree), ``unknown`` (a source with no recorded commit) and
    ``flags`` (the names of those that hold)."""
    merged: dict[Key, dict] = {}
    for name, manifest, records in runs:
        for key, count in run_sources(manifest, records).items():
            entry = merged.setdefault(key, {**dict(zip(KEY_FIELDS, key, strict=True)), "runs": [], "records": 0})
            entry["runs"].append(name)
            entry["records"] = None if count is None or entry["records"] is None else entry["records"] + count
    sources = list(merged.values())
    out = {"sources": sources, "mixed": len(sources) > 1, "dirty": any(s["dirty"] for s in sources),
           "unknown": any(s["commit"] is None for s in sources)}
    out["flags"] = [label for key, label in (("mixed", "mixed"), ("dirty", "dirty"), ("unknown", "unknown source"))
                    if out[key]]
    return out


def describe(source: dict) -> str:
    """One line per source, e.g. "selfensemble 0.3.0, torch 2.13.0, commit e2fbfd9 (dirty): weighted_avg 261"."""
    commit = source["commit"]
    commit = "commit not recorded" if commit is None else f"commit {commit[:7] if len(commit) == 40 else commit}"
    runs = ", ".join(source["runs"])
    count = "" if source["records"] is None else f" ({source['records']} records)"
    return (f"selfensemble {source['selfensemble']}, torch {source['torch']}, transformers {source['transformers']}, "
            f"{commit}{' (dirty tree)' if source['dirty'] else ''}: {runs}{count}")
