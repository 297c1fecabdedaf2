"""Experiments end to end: dataset → paraphrases → (confidence) → every method → scored, resumable runs.

One model load serves all methods; each method writes its own run folder (results.jsonl,
metrics.json, manifest.json). Items already in a run's results are skipped, so a killed run
resumes where it stopped. Timing is measured after a warm-up batch, so methods compare fairly.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from selfensemble import defaults
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
    layout: str = defaults.FLEX_LAYOUT
    positions: str = defaults.FLEX_POSITIONS
    rescale: bool = defaults.FLEX_RESCALE
    fusion_temperature: float = defaults.FLEX_TEMPERATURE
    fusion_scale: float = defaults.FLEX_SCALE
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
    from selfensemble.paraphrase import ParaphraseConfig

    short = [it for it in items if len(it.prompts) < cfg.num_paraphrases]
    blanks = [it for it in short if "[MASK]" in it.question]
    if blanks:
        console.print(f"{len(blanks)} fill-in-the-blank items have fewer than {cfg.num_paraphrases} templates; "
                      "they are asked through the templates they have (no generated paraphrases).")
    need = [it for it in short if "[MASK]" not in it.question]
    if not need:
        return items
    pcfg = ParaphraseConfig(num_paraphrases=cfg.num_paraphrases - 1, seed=cfg.seed)
    cache = paraphrase_items(lambda: engine, cfg.model, cfg.dataset, need, pcfg, console)
    out = []
    for it in items:
        if len(it.prompts) >= cfg.num_paraphrases:
            out.append(it)
            continue
        extra = [p for p in cache.get(it.question) or [] if p not in it.prompts]
        out.append(Item(it.id, tuple(it.prompts) + tuple(extra), it.answers, it.group, it.meta))
    return out


def paraphrase_items(engine_factory, model: str, dataset: str, items: list[Item], pcfg, console):
    """Write paraphrases for the items not in the on-disk cache; returns the cache.

    ``engine_factory()`` is called only when something is missing, so a fully cached dataset never
    loads the model.
    """
    from selfensemble.paraphrase import ParaphraseCache, generate_paraphrases

    cache = ParaphraseCache(model, dataset, pcfg)
    missing = [it for it in items if cache.get(it.question) is None]
    if not missing:
        return cache
    engine = engine_factory()
    t0 = time.perf_counter()
    with progress_bar(console) as progress:
        task = progress.add_task("paraphrasing", total=len(missing) * pcfg.num_paraphrases)
        paras = generate_paraphrases(engine, [it.question for it in missing], pcfg,
                                     lambda n: progress.advance(task, n))
    cache.put_many({it.question: p for it, p in zip(missing, paras, strict=True)})
    console.print(f"paraphrased {len(missing)} questions in {time.perf_counter() - t0:.1f}s → {cache.path}")
    return cache


def select_prompts(item: Item, cfg: RunConfig) -> list[str]:
    prompts = list(item.prompts[: cfg.num_paraphrases])
    if cfg.prompt_indices is None:
        return prompts
    bad = [i for i in cfg.prompt_indices if i >= len(prompts) or i < 0]
    if bad:
        raise SelfEnsembleError(f"--prompt-indices {bad} out of range: item {item.id} has {len(prompts)} prompts.")
    return [prompts[i] for i in cfg.prompt_indices]


def progress_bar(console):
    """The rich progress bar every long step shows (done / total, elapsed, ETA)."""
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
    from selfensemble.scoring import is_correct, is_echo

    rec = {
        "id": item.id, "prompts": answer.prompts, "gold": list(item.answers), "prediction": answer.answer,
        "generation": answer.generation, "correct": is_correct(answer.answer, item.answers, match),
        "echo": is_echo(answer.answer, answer.prompts, item.answers, item.meta.get("subject")),
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
        with progress_bar(console) as progress:
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
                                     rescale=cfg.rescale, fusion_temperature=cfg.fusion_temperature,
                                     fusion_scale=cfg.fusion_scale, batch_size=cfg.batch_size))
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
        console.print(f"{method}: accuracy {m['accuracy']:.3f} over {m['n']} items, echo {m['echo_rate'] or 0:.1%}, "
                      f"{m['seconds_per_item']:.3f} s/question → {folder}")
    return results
