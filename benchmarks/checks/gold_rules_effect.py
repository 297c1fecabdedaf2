"""What the gold rules change on finished runs: the alias rule (WebQuestions) and N-M golds (ParaRel).

    python benchmarks/checks/gold_rules_effect.py RUN_DIR [RUN_DIR ...]   # markdown table on stdout

For each run folder (or folder of per-method runs) and each scorer: accuracy as the records were
scored when written (no alias rule, the data line's object as the only ParaRel gold), with the alias
rule (records rescored by today's scorers, store.records.rescored), and — for ParaRel runs — with
every object the relation pairs with the subject as gold (data.pararel, read from the shared data).
The confirmatory runs: `tar xzf benchmarks/results/confirm/runs.tar.gz -C /tmp`, then pass
/tmp/confirm-runs/<model>/<dataset>. Nothing is written.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

from selfensemble.analysis.report import find_runs
from selfensemble.scoring import SCORERS, score_all
from selfensemble.store.records import mean_or_nan, rescored, run_config
from selfensemble.store.run_store import load_run


def nm_golds(records: list[dict]) -> dict[str, list[str]]:
    """{record id: every object of its subject in its relation} from the shared ParaRel data."""
    return _golds(tuple(sorted({str(r["id"]).split(":", 1)[0] for r in records})))


@lru_cache(maxsize=8)
def _golds(relations: tuple[str, ...]) -> dict[str, list[str]]:
    from selfensemble.data import load_dataset

    ds = load_dataset("pararel", relations=list(relations), split="test")
    return {it.id: list(it.answers) for it in ds.items}


def rows_for(run: Path) -> list[str]:
    manifest, records, _ = load_run(run)
    cfg = run_config(manifest)
    stored = [r["scores"] for r in records]
    now = [r["scores"] for r in rescored(records, cfg.get("match"))]
    nm = None
    if cfg.get("dataset") == "pararel":
        golds = nm_golds(records)
        nm = [score_all(str(r.get("prediction") or ""), golds.get(str(r["id"]), r["gold"])) for r in records]
    out = []
    for s in SCORERS:
        cells = [mean_or_nan([float(x[s]) for x in stored]), mean_or_nan([float(x[s]) for x in now])]
        if nm is not None:
            cells.append(mean_or_nan([float(x[s]) for x in nm]))
        nums = " | ".join(f"{c:.3f}" for c in cells) + ("" if nm is not None else " | –")
        out.append(f"| {(cfg.get('load') or {}).get('model')} | {cfg.get('dataset')} | {cfg.get('method')} | "
                   f"{len(records)} | {s} | {nums} |")
    return out


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    print("| model | dataset | method | n | scorer | as written | alias rule | N-M golds |")
    print("|---|---|---|---:|---|---:|---:|---:|")
    for run in find_runs([Path(a) for a in argv]):
        for line in rows_for(run):
            print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
