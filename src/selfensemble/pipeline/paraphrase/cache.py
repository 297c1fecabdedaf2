"""The one on-disk paraphrase cache every entry point shares (`run`, `paraphrase`, `ask`, `serve`, `lm-eval`).

A cache file holds ``{question: entry}`` for one set of writer settings: the model, N (prompts per
question, the original included), the sampling settings and seed, the gate's settings, and two
versions (``CACHE_VERSION``: the writing prompt, filters and gate; ``SAMPLER_VERSION``: the
engine's sampling streams). The dataset is not part of the key: a question's paraphrases depend on
its text and these settings only, so a question `run` paraphrased is never paraphrased again by
`ask`, `serve` or `lm-eval`.

An entry is final ``{"paraphrases", "checks", "wanted"}`` (``wanted``: paraphrases besides the
original, N - 1), or ``{"partial": state}``: a question whose writing stopped mid-way (a kill, a
server's budget), which the writer resumes from that state instead of starting again.

Older caches (version 6) were one file per dataset and counted ``num_paraphrases`` without the
original. They are read, never written: when a question is missing here, the old files of the same
settings (``<dataset>-<old key>.json``, old key computed with N - 1) are searched for it and what
they hold is copied here (``import_legacy``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from selfensemble.store import jsoncache

if TYPE_CHECKING:
    from selfensemble.config.gate import GateConfig
    from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig

CACHE_VERSION = 7  # bump when the writing prompt, the filters or the gate change, so stale caches are not reused
SAMPLER_VERSION = 2  # bump when Engine.sample's streams change (2: counter-based streams on the device)
LEGACY_VERSION = 6  # the per-dataset caches whose num_paraphrases counted paraphrases besides the original
_LEGACY_NAME = re.compile(r"^(?P<dataset>.+)-(?P<key>[0-9a-f]{16})\.json$")


def cache_dir() -> Path:
    from selfensemble import fileio  # the one helper every cache finds its folder with

    return fileio.cache_dir()


def _hash(parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _gate_key(gate: GateConfig | None) -> dict:
    from selfensemble.config.gate import GateConfig

    return (gate or GateConfig(enabled=False)).key()


def cache_key(model: str, cfg: ParaphraseConfig, gate: GateConfig | None) -> str:
    """16 hex digits naming the writer settings; ``prompts`` is N, the original included."""
    settings = {**asdict(cfg), "prompts": cfg.num_paraphrases}
    del settings["num_paraphrases"]  # named "prompts" here, so no key of the old meaning can match
    return _hash({"version": CACHE_VERSION, "sampler": SAMPLER_VERSION, "model": model, "writer": settings,
                  "gate": _gate_key(gate)})


def legacy_key(model: str, dataset: str, cfg: ParaphraseConfig, gate: GateConfig | None) -> str:
    """The version-6 key of the same settings for ``dataset`` (its num_paraphrases was N - 1)."""
    old = {**asdict(cfg), "num_paraphrases": cfg.num_paraphrases - 1}
    return _hash([LEGACY_VERSION, model, dataset, old, _gate_key(gate)])


def _slug(model: str) -> str:
    """A readable file-name prefix for a model spec (a path keeps its last part)."""
    name = model.rstrip("/").rsplit("/", 1)[-1] or "model"
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)[:60]


class ParaphraseCache:
    """``{question: entry}`` on disk for one model and writer settings (see the module docstring).

    Shared safely between processes (``jsoncache``): each ``put_many`` appends to the file under a
    lock, so a run saves question by question while another process adds its own.
    """

    def __init__(self, model: str, cfg: ParaphraseConfig, root: Path | None = None, gate: GateConfig | None = None):
        self.model, self.cfg, self.gate = model, cfg, gate
        self.folder = (root or cache_dir()) / "paraphrases"
        self.path = self.folder / f"{_slug(model)}-{cache_key(model, cfg, gate)}.json"
        self.data: dict[str, dict | list] = jsoncache.read(self.path, "paraphrase")

    def entry(self, question: str) -> dict | None:
        """The final {"paraphrases", "checks", "wanted"} of a question, or None (missing or partial)."""
        e = self.data.get(question)
        if isinstance(e, list):  # the oldest form: a bare list of paraphrases
            return {"paraphrases": e, "checks": [], "wanted": len(e)}
        return None if e is None or "partial" in e else e

    def partial(self, question: str) -> dict | None:
        """The saved state of a question whose writing stopped mid-way, or None."""
        e = self.data.get(question)
        return e["partial"] if isinstance(e, dict) and "partial" in e else None

    def get(self, question: str) -> list[str] | None:
        e = self.entry(question)
        return None if e is None else list(e["paraphrases"])

    def put_many(self, items: Mapping[str, list[str] | dict]) -> None:
        """Store ``items`` on disk now (merged with entries other processes wrote meanwhile)."""
        jsoncache.merge(self.path, items, "paraphrase")
        self.data.update(items)

    def import_legacy(self, questions: Iterable[str]) -> int:
        """Copy the final entries of ``questions`` that version-6 caches of the same settings hold
        (any dataset) into this cache; returns how many were copied. The old files are only read."""
        wanted = {q for q in questions if self.entry(q) is None}
        found: dict[str, dict | list] = {}
        for path in self._legacy_files():
            if not wanted - set(found):
                break
            old = jsoncache.read(path, "paraphrase")
            found.update({q: old[q] for q in wanted - set(found) if q in old})
        self.put_many(found)
        return len(found)

    def _legacy_files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        out = []
        names = {p.name.removesuffix(".journal") for p in self.folder.glob("*.json*")}  # a journal alone counts
        for path in (self.folder / n for n in sorted(names)):
            m = _LEGACY_NAME.match(path.name)
            if m and path != self.path and m["key"] == legacy_key(self.model, m["dataset"], self.cfg, self.gate):
                out.append(path)
        return out
