"""Experiments end to end: dataset → paraphrases → (confidence) → every method → scored, resumable runs.

One model load serves all methods; each method writes its own run folder (results.jsonl,
metrics.json, manifest.json). Items already in a run's results are skipped, so a killed run
resumes where it stopped. Timing is measured after a warm-up batch, so methods compare fairly.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import typer

from selfensemble.data.base import Dataset, Item
from selfensemble.errors import SelfEnsembleError

SAMPLE_DATA = Path(__file__).parent / "samples" / "trivia.jsonl"


@dataclass
class RunConfig:
    """Everything that defines a run (saved in the manifest; resuming requires the same values)."""

    dataset: str = "webqa"
    data_path: str | None = None
    split: str = "test"
    limit: int | None = None
    methods: list[str] = field(default_factory=lambda: ["origin"])
    num_paraphrases: int = 5
    prompt_indices: list[int] | None = None
    few_shot: int = 5
    seed: int = 0
    model: str = "smollm2-135m"
    device: str = "cpu"
    dtype: str = "auto"
    batch_size: int = 8
    max_new_tokens: int = 16
    attention: str | None = None
    layout: str = "shared"
    positions: str = "restart"
    rescale: bool = False
    chat: bool = False
    match: str = "partial"
    confidence_samples: int = 4
    dataset_options: dict = field(default_factory=dict)
    out: str = "runs/experiment"
    subfolders: bool = True

    def method_config(self, method: str) -> dict:
        """The manifest config of one method's run (other methods' names don't define it)."""
        d = asdict(self)
        d.pop("methods")
        d.pop("subfolders")
        d["method"] = method
        return d


def load_items(cfg: RunConfig) -> tuple[Dataset, list[Item]]:
    from selfensemble.data import load_dataset

    ds = load_dataset(cfg.dataset, cfg.data_path, split=cfg.split, limit=cfg.limit, seed=cfg.seed,
                      **cfg.dataset_options)
    if not ds.items:
        raise SelfEnsembleError(f"Dataset {cfg.dataset!r} gave no items (check --data-path / --limit).")
    return ds, list(ds.items)


def ensure_paraphrases(engine, cfg: RunConfig, items: list[Item], console) -> list[Item]:
    """Questions with fewer than N prompts get model-written paraphrases (cached on disk).

    Fill-in-the-blank items (templates with [MASK]) keep the templates their dataset has: a
    relation with fewer than N templates is asked through fewer prompts, and the run says so.
    """
    from selfensemble.paraphrase import ParaphraseCache, ParaphraseConfig, generate_paraphrases

    short = [it for it in items if len(it.prompts) < cfg.num_paraphrases]
    blanks = [it for it in short if "[MASK]" in it.question]
    if blanks:
        console.print(f"{len(blanks)} fill-in-the-blank items have fewer than {cfg.num_paraphrases} templates; "
                      "they are asked through the templates they have (no generated paraphrases).")
    need = [it for it in short if "[MASK]" not in it.question]
    if not need:
        return items
    pcfg = ParaphraseConfig(num_paraphrases=cfg.num_paraphrases - 1, seed=cfg.seed)
    cache = ParaphraseCache(cfg.model, cfg.dataset, pcfg)
    missing = [it for it in need if cache.get(it.question) is None]
    if missing:
        t0 = time.perf_counter()
        with _progress(console) as progress:
            task = progress.add_task("paraphrasing", total=len(missing) * pcfg.num_paraphrases)
            paras = generate_paraphrases(engine, [it.question for it in missing], pcfg,
                                         lambda n: progress.advance(task, n))
        cache.put_many({it.question: p for it, p in zip(missing, paras, strict=True)})
        console.print(f"paraphrased {len(missing)} questions in {time.perf_counter() - t0:.1f}s → {cache.path}")
    out = []
    for it in items:
        if len(it.prompts) >= cfg.num_paraphrases:
            out.append(it)
            continue
        extra = [p for p in cache.get(it.question) or [] if p not in it.prompts]
        out.append(Item(it.id, tuple(it.prompts) + tuple(extra), it.answers, it.group, it.meta))
    return out


def select_prompts(item: Item, cfg: RunConfig) -> list[str]:
    prompts = list(item.prompts[: cfg.num_paraphrases])
    if cfg.prompt_indices is None:
        return prompts
    bad = [i for i in cfg.prompt_indices if i >= len(prompts) or i < 0]
    if bad:
        raise SelfEnsembleError(f"--prompt-indices {bad} out of range: item {item.id} has {len(prompts)} prompts.")
    return [prompts[i] for i in cfg.prompt_indices]


def _progress(console):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)


def _weights(engine, cfg: RunConfig, queries: list, console) -> list[list[float]]:
    from selfensemble.confidence import ConfidenceCache, ConfidenceConfig, estimate

    ccfg = ConfidenceConfig(samples=cfg.confidence_samples, seed=cfg.seed)
    cache = ConfidenceCache(cfg.model, ccfg)
    todo = [q for q in queries if any(cache.get(p, q.fmt) is None for p in q.prompts)]
    if todo:
        console.print(f"estimating confidence for {len(todo)} questions ({ccfg.samples} samples per prompt)…")
        for q, confs in zip(todo, estimate(engine, todo, ccfg), strict=True):
            for p, c in zip(q.prompts, confs, strict=True):
                cache.put(p, q.fmt, c)
        cache.save()
    return [[cache.get(p, q.fmt).weight for p in q.prompts] for q in queries]


def _record(item: Item, answer, method: str, match: str, weights) -> dict:
    from selfensemble.scoring import is_correct

    rec = {
        "id": item.id, "prompts": answer.prompts, "gold": list(item.answers), "prediction": answer.answer,
        "generation": answer.generation, "correct": is_correct(answer.answer, item.answers, match),
        "confidence": answer.prob, "seconds": answer.seconds, "finish": answer.finish,
        "prefill_tokens": answer.prefill_tokens,
    }
    if answer.per_prompt is not None:
        rec["per_prompt"] = answer.per_prompt
        rec["per_prompt_correct"] = [is_correct(a, item.answers, match) for a in answer.per_prompt]
    if weights is not None:
        rec["weights"] = weights
    if answer.notes:
        rec["notes"] = answer.notes
    return rec


def run_method(engine, cfg: RunConfig, method: str, items: list[Item], queries: list, out: Path, console) -> dict:
    """Answer every item not yet in ``out``'s results; returns the run's metrics."""
    from selfensemble import fusion
    from selfensemble.report import summarize
    from selfensemble.store import RunStore

    store = RunStore(out, cfg.method_config(method)).open()
    try:
        done = store.done_ids()
        todo = [i for i, it in enumerate(items) if it.id not in done]
        weights = _weights(engine, cfg, [queries[i] for i in todo], console) if method in fusion.WEIGHTED else None
        if weights is not None:
            for i, w in zip(todo, weights, strict=True):
                queries[i].weights = w
        if todo:  # warm-up on a full batch (compiles, allocator, prefix KV); its answers are discarded
            engine.answer_many([queries[i] for i in todo[: engine.config.batch_size]], method, _gen(cfg))
        t0 = time.perf_counter()
        compiles = engine.compile_count
        with _progress(console) as progress:
            task = progress.add_task(f"{method:>12}", total=len(items), completed=len(items) - len(todo))

            def on_done(j: int, answer) -> None:
                i = todo[j]
                store.append(_record(items[i], answer, method, cfg.match, queries[i].weights if weights else None))
                progress.advance(task)

            engine.answer_many([queries[i] for i in todo], method, _gen(cfg), on_done=on_done)
        records = store.records()
        metrics = summarize(records, store.manifest())
        metrics.update(method=method, model=cfg.model, dataset=cfg.dataset, num_paraphrases=cfg.num_paraphrases,
                       attention=engine.attention_note)
        store.write_metrics(metrics)
        store.update_manifest(attention_path=engine.attention_note, wall_time_s=time.perf_counter() - t0,
                              compiles_during_run=engine.compile_count - compiles, items_this_session=len(todo),
                              engine_stats=dict(engine.stats))
        return metrics
    finally:
        store.close()


def _gen(cfg: RunConfig):
    from selfensemble.decoding import GenerationConfig

    return GenerationConfig(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)


def run_experiment(cfg: RunConfig, console=None, engine=None) -> dict[str, dict]:
    """Run every method of ``cfg`` over the dataset; returns {method: metrics}."""
    from rich.console import Console

    from selfensemble.methods import Engine, EngineConfig, Query, check_method
    from selfensemble.models import load_model
    from selfensemble.prompts import PromptFormat

    console = console or Console()
    for m in cfg.methods:
        check_method(m)
    if cfg.num_paraphrases < 1:
        raise SelfEnsembleError("--num-paraphrases must be >= 1 (it counts the original question).")
    ds, items = load_items(cfg)
    if engine is None:
        t0 = time.perf_counter()
        engine = Engine(load_model(cfg.model, cfg.device, cfg.dtype, cfg.seed),
                        EngineConfig(attention=cfg.attention, layout=cfg.layout, positions=cfg.positions,
                                     rescale=cfg.rescale, batch_size=cfg.batch_size))
        console.print(f"loaded {cfg.model} in {time.perf_counter() - t0:.1f}s; attention: {engine.attention_note}")
    items = ensure_paraphrases(engine, cfg, items, console)
    queries = [Query(select_prompts(it, cfg), PromptFormat(instruction=ds.instruction, chat=cfg.chat,
                                                           examples=tuple(ds.few_shot(it, cfg.few_shot, cfg.seed))))
               for it in items]
    out = Path(cfg.out)
    results = {}
    for method in cfg.methods:
        folder = out / method if cfg.subfolders else out
        results[method] = run_method(engine, cfg, method, items, queries, folder, console)
        m = results[method]
        console.print(f"{method}: accuracy {m['accuracy']:.3f} over {m['n']} items, "
                      f"{m['seconds_per_item']:.3f} s/question → {folder}")
    return results


# ---------------------------------------------------------------------------------------------
# CLI commands (registered on the app by cli.py)


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _ints(text: str | None, what: str) -> list[int] | None:
    try:
        return [int(t) for t in _split(text)] if text else None
    except ValueError as err:
        raise SelfEnsembleError(f"{what} takes comma-separated integers, got {text!r}.") from err


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("paraphrase")(paraphrase_command)
    app.command("demo")(demo_command)
    app.command("interactive")(interactive_command)


def run_command(
    dataset: str = typer.Option("webqa", help="webqa | pararel | myriadlama | jsonl | csv"),
    data_path: str = typer.Option(None, help="Local file/folder (default: ../shared/data when present)."),
    method: str = typer.Option(None, help="One method; results go straight into --out."),
    methods: str = typer.Option(None, help="Several methods, comma-separated; one subfolder each."),
    num_paraphrases: int = typer.Option(5, help="Prompts per question, the original included."),
    limit: int = typer.Option(None, help="At most this many items."),
    prompt_indices: str = typer.Option(None, help="Which prompts take part, e.g. 0,2,4."),
    few_shot: int = typer.Option(5, help="Few-shot examples in the shared prefix."),
    model: str = typer.Option("smollm2-135m"),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("auto"),
    batch_size: int = typer.Option(8),
    max_new_tokens: int = typer.Option(16),
    attention: str = typer.Option(None, help="flex | sdpa | auto (flex, loud fallback); default: sdpa on CPU, auto on CUDA"),
    layout: str = typer.Option("shared", help="flex layout: shared | full"),
    positions: str = typer.Option("restart", help="flex positions: restart | right | sequential"),
    rescale: bool = typer.Option(False),
    chat: bool = typer.Option(False),
    match: str = typer.Option("partial", help="partial | exact"),
    confidence_samples: int = typer.Option(4, help="Samples per prompt for weighted_* confidence."),
    templates: str = typer.Option(None, help="myriadlama: manual | auto | mixed"),
    relations: str = typer.Option(None, help="pararel/myriadlama: relations, e.g. P19,P20"),
    max_facts_per_relation: int = typer.Option(None),
    question_column: str = typer.Option(None, help="jsonl/csv: question column (default 'question')."),
    answers_column: str = typer.Option(None, help="jsonl/csv: answers column (default 'answers')."),
    paraphrase_columns: str = typer.Option(None, help="jsonl/csv: paraphrase column(s), comma-separated."),
    id_column: str = typer.Option(None, help="jsonl/csv: id column (default: line number)."),
    split: str = typer.Option("test"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/experiment"), help="Output folder."),
):
    """Run methods over a dataset; resumable (rerun the same command after a crash)."""
    if method and methods:
        raise SelfEnsembleError("Give --method or --methods, not both.")
    chosen = _split(methods) or [method or "origin"]
    options = {"templates": templates, "relations": _split(relations),
               "max_facts_per_relation": max_facts_per_relation, "question_column": question_column,
               "answers_column": answers_column, "paraphrase_columns": _split(paraphrase_columns),
               "id_column": id_column}
    options = {k: v for k, v in options.items() if v is not None}
    cfg = RunConfig(dataset=dataset, data_path=data_path, split=split, limit=limit, methods=chosen,
                    num_paraphrases=num_paraphrases, prompt_indices=_ints(prompt_indices, "--prompt-indices"),
                    few_shot=few_shot, seed=seed, model=model, device=device, dtype=dtype, batch_size=batch_size,
                    max_new_tokens=max_new_tokens, attention=attention, layout=layout, positions=positions,
                    rescale=rescale, chat=chat, match=match, confidence_samples=confidence_samples,
                    dataset_options=options, out=str(out), subfolders=method is None)
    run_experiment(cfg)
    if len(chosen) > 1:
        from selfensemble.report import report

        report([out], out / "report.png")


def paraphrase_command(
    dataset: str = typer.Option("webqa"),
    data_path: str = typer.Option(None),
    num_paraphrases: int = typer.Option(5, help="Paraphrases per question (besides the original)."),
    limit: int = typer.Option(None),
    model: str = typer.Option("smollm2-135m"),
    device: str = typer.Option("cpu"),
    batch_size: int = typer.Option(8),
    temperature: float = typer.Option(0.8),
    top_p: float = typer.Option(0.95),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/paraphrases.jsonl")),
):
    """Generate paraphrases with the model itself (cached; `run` reuses them)."""
    import json

    from rich.console import Console

    from selfensemble.methods import Engine, EngineConfig
    from selfensemble.models import load_model
    from selfensemble.paraphrase import ParaphraseCache, ParaphraseConfig, generate_paraphrases

    console = Console()
    cfg = RunConfig(dataset=dataset, data_path=data_path, limit=limit, seed=seed)
    _, items = load_items(cfg)
    pcfg = ParaphraseConfig(num_paraphrases=num_paraphrases, temperature=temperature, top_p=top_p, seed=seed)
    cache = ParaphraseCache(model, dataset, pcfg)
    missing = [it for it in items if cache.get(it.question) is None]
    if missing:
        engine = Engine(load_model(model, device), EngineConfig(batch_size=batch_size))
        t0 = time.perf_counter()
        with _progress(console) as progress:
            task = progress.add_task("paraphrasing", total=len(missing) * num_paraphrases)
            paras = generate_paraphrases(engine, [it.question for it in missing], pcfg,
                                         lambda n: progress.advance(task, n))
        cache.put_many({it.question: p for it, p in zip(missing, paras, strict=True)})
        console.print(f"{len(missing)} questions in {time.perf_counter() - t0:.1f}s")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as fh:
        for it in items:
            fh.write(json.dumps({"id": it.id, "question": it.question, "answers": list(it.answers),
                                 "paraphrases": cache.get(it.question)}, ensure_ascii=False) + "\n")
    console.print(f"wrote {out} (cache: {cache.path})")


def demo_command(
    out: Path = typer.Option(Path("runs/demo")),
    limit: int = typer.Option(24, help="Questions to run."),
    num_paraphrases: int = typer.Option(5),
    model: str = typer.Option("smollm2-135m"),
):
    """A small real experiment on the embedded model: WebQuestions (or the bundled sample), a report."""
    from rich.console import Console

    from selfensemble.data import default_data_dir
    from selfensemble.report import report

    console = Console()
    data = default_data_dir()
    if data is not None and (data / "webquestions" / "test.jsonl").exists():
        dataset, path, opts = "webqa", str(data / "webquestions"), {}
        console.print(f"demo: WebQuestions from {path}, {limit} questions, N={num_paraphrases}")
    else:
        dataset, path, opts = "jsonl", str(SAMPLE_DATA), {"paraphrase_columns": ["paraphrases"], "id_column": "id"}
        console.print(f"demo: bundled trivia sample ({SAMPLE_DATA.name}); ../shared/data not found")
    cfg = RunConfig(dataset=dataset, data_path=path, limit=limit, num_paraphrases=num_paraphrases,
                    methods=["origin", "per_prompt", "vote", "avg", "max", "flex"], model=model,
                    few_shot=5 if dataset == "webqa" else 0, dataset_options=opts, out=str(out))
    run_experiment(cfg, console)
    report([out], out / "report.png", console=console)


def interactive_command():
    """Choose dataset, model, method and parameters step by step, then run (or ask questions)."""
    from rich.console import Console
    from rich.prompt import IntPrompt, Prompt

    from selfensemble.data import DATASETS, default_data_dir
    from selfensemble.methods import METHODS

    console = Console()
    mode = Prompt.ask("What do you want to do", choices=["ask", "run"], default="ask")
    model = Prompt.ask("Model", default="smollm2-135m")
    if mode == "ask":
        return _interactive_ask(console, model)
    dataset = Prompt.ask("Dataset", choices=DATASETS, default="webqa")
    default_path = default_data_dir()
    path = Prompt.ask("Data path (empty: default)", default="") or None
    if path is None and dataset in ("jsonl", "csv"):
        raise SelfEnsembleError("jsonl/csv datasets need a data path.")
    if path is None and default_path is None and dataset != "myriadlama":
        console.print("[yellow]no local data found; the hub will be tried[/]")
    methods = Prompt.ask(f"Methods (comma-separated, from {', '.join(METHODS)})", default="origin,avg,flex")
    n = IntPrompt.ask("Prompts per question (N, original included)", default=5)
    limit = IntPrompt.ask("How many items", default=20)
    out = Prompt.ask("Output folder", default=f"runs/{dataset}")
    cfg = RunConfig(dataset=dataset, data_path=path, methods=_split(methods), num_paraphrases=n, limit=limit,
                    model=model, out=out)
    console.print(f"[dim]same as: selfensemble run --dataset {dataset} --methods {methods} "
                  f"--num-paraphrases {n} --limit {limit} --model {model} --out {out}[/]")
    run_experiment(cfg, console)
    from selfensemble.report import report

    report([Path(out)], Path(out) / "report.png", console=console)


def _interactive_ask(console, model: str) -> None:
    from rich.prompt import Prompt

    from selfensemble.methods import METHODS, Engine, check_method
    from selfensemble.models import load_model
    from selfensemble.prompts import default_format

    method = check_method(Prompt.ask("Method", choices=list(METHODS), default="flex"))
    engine = Engine(load_model(model))
    while True:
        question = Prompt.ask("Question (empty to quit)", default="")
        if not question:
            return
        paras = []
        while p := Prompt.ask(f"  paraphrase {len(paras) + 1} (empty when done)", default=""):
            paras.append(p)
        try:
            ans = engine.answer([question, *paras], method, fmt=default_format())
        except SelfEnsembleError as err:
            console.print(f"[red]error:[/] {err}")
            continue
        console.print(f"[bold]{ans.answer}[/]  [dim](p={ans.prob:.3f}, {ans.seconds:.2f}s)[/]")
