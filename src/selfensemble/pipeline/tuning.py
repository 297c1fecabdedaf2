"""Per-prompt weights fit on a dev run, written as a JSON file and applied to a test run.

The published ensemble gains over single prompts (LPAQA's 31.1 → 39.6 on LAMA) weight prompts by
how well they did on training data; ``weighted_avg`` / ``weighted_max`` otherwise weight by each
item's own confidence. Here a prompt is a ParaRel relation's template (named by its pattern, so it is
the same prompt whatever the subject and whatever other templates a run keeps) or, for questions
with model-written paraphrases, a prompt position (0 = the original question).

Fit (:func:`fit_weights`): per group (relation; "" for one pool) and prompt, the dev accuracy of that
prompt asked alone, Laplace-smoothed — (correct + 1) / (n + 2), so a prompt seen on few items is
pulled towards 1/2 instead of to 0 or 1 — then normalised to sum 1 within the group. ``best`` is the
prompt with the largest smoothed accuracy (the first on ties, in prompt order): the one ``select``
answers through. The weights file::

    {"format": "selfensemble-prompt-weights/1", "fit": {...where it came from...},
     "groups": {"P19": {"key": "template", "best": "[X] was born in [Y].",
                        "prompts": {"[X] was born in [Y].": {"weight": .21, "accuracy": .55,
                                                             "smoothed": .545, "correct": 11, "n": 20}, ...}}}}

Apply (:func:`weights_for`): a test item's weights are its group's weights of its prompts, in its
prompt order. A group or prompt the file does not hold is refused (ConfigError naming both): weights
fit on other relations or templates say nothing about these, and a silent fallback to uniform weights
would report an untuned method under a tuned name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfensemble.errors import ConfigError
from selfensemble.methods.registry import methods_where
from selfensemble.store.record_view import AnyRecord, RecordView
from selfensemble.store.records import rescored, run_config
from selfensemble.store.run_store import atomic_write_json, is_run_dir, load_run

WEIGHTS_FORMAT = "selfensemble-prompt-weights/1"
WEIGHT_RULES = ("confidence", "entropy", "agreement")  # --weights values that are not a file
SMOOTHING = "laplace: (correct + 1) / (n + 2), then normalised to sum 1 within the group"


def is_weights_file(value: str | None) -> bool:
    """True when ``--weights`` names a file rather than a rule (confidence, entropy, agreement)."""
    return bool(value) and value not in WEIGHT_RULES


def prompt_keys(record: RecordView) -> tuple[str, list[str]]:
    """("template", the record's ``prompt_templates``) or ("position", ["0", "1", ...]) for its prompts."""
    if record.prompt_templates:
        return "template", [str(t) for t in record.prompt_templates]
    return "position", [str(j) for j in range(len(record.per_prompt or record.prompts))]


def _source_records(source: Path | str | Sequence[AnyRecord], scorer: str | None) -> tuple[list[RecordView], dict]:
    """Records with per-prompt answers (rescored under today's rules) and what they came from."""
    if not isinstance(source, (str, Path)):
        return RecordView.all(source), {"source": "records"}
    folder = Path(source)
    if not is_run_dir(folder):  # a folder of method runs: per_prompt's (it answers every prompt alone) first
        plain = methods_where(per_prompt=True, select=None, derived_from=None)
        subs = sorted((s for s in folder.iterdir() if s.is_dir() and is_run_dir(s)),
                      key=lambda s: s.name not in plain) if folder.is_dir() else []
        if not subs:
            raise ConfigError(f"{folder}: no run folder (results.jsonl) here or in its subfolders.")
        folder = subs[0]
    manifest, records, _ = load_run(folder)
    cfg = run_config(manifest)
    info = {"source": str(folder), "method": cfg.get("method"), "model": (cfg.get("load") or {}).get("model"),
            "dataset": cfg.get("dataset"), "split": cfg.get("split"), "scorer": scorer or cfg.get("match")}
    return RecordView.all(rescored(records, cfg.get("match"))), info


def fit_weights(source: Path | str | Sequence[AnyRecord], scorer: str | None = None) -> dict[str, Any]:
    """Per-prompt weights from a dev run's per-prompt answers (module docstring: the rule and the file).

    ``source``: a run folder (or a folder of method runs: its ``per_prompt`` run is used) or its
    records; ``scorer`` (scoring.SCORERS) scores each prompt's answer, None = the run's own --match.
    Only records with per-prompt answers count (a per_prompt or vote run); none is a ConfigError.
    """
    records, info = _source_records(source, scorer)
    counts: dict[str, dict[str, list[float]]] = {}
    kinds: dict[str, set[str]] = {}
    used = 0
    for rec in records:
        values = rec.per_prompt_values(scorer)
        if not values:
            continue
        group = rec.group_in(info.get("dataset")) or ""
        kind, keys = prompt_keys(rec)
        kinds.setdefault(group, set()).add(kind)
        tally = counts.setdefault(group, {})
        for key, value in zip(keys, values, strict=True):
            cell = tally.setdefault(key, [0.0, 0])
            cell[0] += value
            cell[1] += 1
        used += 1
    if not used:
        raise ConfigError(f"{info['source']}: no record has per-prompt answers to fit weights on "
                          "(run per_prompt on the dev split first).")
    mixed = [g for g, k in kinds.items() if len(k) > 1]
    if mixed:
        raise ConfigError(f"{info['source']}: group {mixed[0]!r} mixes records with and without prompt templates "
                          "(two versions of the run); fit on one run written by one version.")
    groups = {g: _group_weights(next(iter(kinds[g])), tally) for g, tally in counts.items()}
    return {"format": WEIGHTS_FORMAT, "fit": {**info, "items": used, "smoothing": SMOOTHING}, "groups": groups}


def _group_weights(kind: str, tally: dict[str, list[float]]) -> dict[str, Any]:
    """One group's entry: smoothed accuracy per prompt, normalised weights, and the best prompt."""
    keys = sorted(tally, key=int) if kind == "position" else list(tally)  # templates: order first seen
    smoothed = {k: (tally[k][0] + 1) / (tally[k][1] + 2) for k in keys}
    total = sum(smoothed.values())
    prompts = {k: {"weight": smoothed[k] / total, "accuracy": tally[k][0] / tally[k][1], "smoothed": smoothed[k],
                   "correct": tally[k][0], "n": tally[k][1]} for k in keys}
    best = max(keys, key=lambda k: smoothed[k])  # max keeps the first of equal values
    return {"key": kind, "best": best, "prompts": prompts}


def write_weights(weights: dict, path: Path | str) -> Path:
    """Write a weights file atomically; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, weights)
    return path


def load_weights(path: Path | str) -> dict[str, Any]:
    """A weights file read and checked (format, groups), or a ConfigError naming what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"weights {str(path)!r} is neither a rule ({', '.join(WEIGHT_RULES)}) nor a file "
                          "of them (write one with `selfensemble tune-weights DEV_RUN --out FILE`).", arguments=("weights",))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{p}: not a readable weights file ({err}).") from None
    if not isinstance(data, dict) or data.get("format") != WEIGHTS_FORMAT or not isinstance(data.get("groups"), dict):
        raise ConfigError(f"{p}: not a weights file of format {WEIGHTS_FORMAT!r} (write one with tune-weights).")
    return data


def file_sha256(path: Path | str) -> str:
    """The weights file's content hash (a run records it, so another file under the same name is not resumed)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def weights_for(weights: dict, group: str, templates: Sequence[str] | None, n_prompts: int,
                where: str = "the weights file") -> list[float]:
    """One weight per prompt of an item of ``group``: by template pattern when the group was fit by
    template (``templates``: the item's, in prompt order), else by position 0..n_prompts-1.

    A group or prompt the file lacks, or an item without templates for a group fit by template (or
    the reverse), is a ConfigError naming them. Example: group "P19" fit on templates A, B; an item
    asked through (B, A) → [w_B, w_A].
    """
    entry = weights["groups"].get(group)
    if entry is None:
        have = ", ".join(sorted(weights["groups"])[:8]) or "none"
        raise ConfigError(f"{where} holds no weights for group {group!r} (it has {have}); fit weights on a dev "
                          "run of the same relations.")
    if entry["key"] == "template":
        if not templates:
            raise ConfigError(f"{where} weights group {group!r} by template, but its items here name no templates.")
        keys = list(templates)
    else:
        if templates:
            raise ConfigError(f"{where} weights group {group!r} by prompt position (fit on records without "
                              "templates), but its items here name their templates; fit again on a dev run "
                              "written by this version.")
        keys = [str(j) for j in range(n_prompts)]
    missing = [k for k in keys if k not in entry["prompts"]]
    if missing:
        raise ConfigError(f"{where} has no weight for prompt {missing[0]!r} of group {group!r} "
                          f"({len(missing)} missing); fit weights on a dev run asked through the same prompts.")
    return [float(entry["prompts"][k]["weight"]) for k in keys]
