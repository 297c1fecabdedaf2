"""Experiments end to end: dataset → paraphrases → (confidence) → every method → scored, resumable runs.

One model load serves all methods; each method writes its own run folder (results.jsonl,
metrics.json, manifest.json). Items already in a run's results are skipped, so a killed run
resumes where it stopped. Timing is measured after a warm-up batch, so methods compare fairly.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
    weights: str = "confidence"  # weighted_*: confidence (sampled) | entropy | agreement (per decode step)
    gate: bool | None = None  # None: on for generated paraphrases, off for a dataset's own
    min_similarity: float | None = None  # None: paraphrase_gate.DEFAULT_MIN_SIMILARITY of the embedder
    embedder: str = "wordllama"
    entity_guard: bool = False  # paraphrase_gate.DEFAULT_ENTITY_GUARD (measured: no gain in accuracy)
    dataset_options: dict = field(default_factory=dict)
    out: str = "runs/experiment"
    subfolders: bool = True

    def gate_config(self, generated: bool):
        """The paraphrase gate for generated (True) or dataset (False) paraphrases."""
        from selfensemble.paraphrase_gate import GateConfig

        on = self.gate if self.gate is not None else generated
        return GateConfig(enabled=on, embedder=self.embedder, entity_guard=self.entity_guard,
                          min_similarity=self.min_similarity)

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

    Generated paraphrases pass the gate (paraphrase_gate.py) unless ``cfg.gate`` is False; a
    question whose candidates mostly fail is asked through fewer prompts, and its record says so
    (``paraphrase_gate`` in the item's meta → the run records). A dataset's own paraphrases are
    screened only when ``cfg.gate`` is True. Fill-in-the-blank items (templates with [MASK]) keep
    the templates their dataset has: a relation with fewer than N templates is asked through fewer
    prompts, and the run says so.
    """
    from selfensemble.paraphrase import ParaphraseConfig

    items = _screen_dataset_paraphrases(cfg, items) if cfg.gate else items
    short = [it for it in items if len(it.prompts) < cfg.num_paraphrases]
    blanks = [it for it in short if "[MASK]" in it.question]
    if blanks:
        console.print(f"{len(blanks)} fill-in-the-blank items have fewer than {cfg.num_paraphrases} templates; "
                      "they are asked through the templates they have (no generated paraphrases).")
    need = [it for it in short if "[MASK]" not in it.question and not it.meta.get("paraphrase_gate")]
    if not need:
        return items
    pcfg = ParaphraseConfig(num_paraphrases=cfg.num_paraphrases - 1, seed=cfg.seed)
    gate = cfg.gate_config(generated=True)
    cache = paraphrase_items(lambda: engine, cfg.model, cfg.dataset, need, pcfg, console, gate)
    todo = {it.id for it in need}
    out, few = [], 0
    for it in items:
        if it.id not in todo:
            out.append(it)
            continue
        entry = cache.entry(it.question) or {"paraphrases": [], "checks": []}
        extra = [p for p in entry["paraphrases"] if p not in it.prompts]
        meta = dict(it.meta)
        if gate.enabled:
            meta["paraphrase_gate"] = gate_record(entry, len(extra), pcfg.num_paraphrases, gate)
            few += len(extra) < pcfg.num_paraphrases
        out.append(Item(it.id, tuple(it.prompts) + tuple(extra), it.answers, it.group, meta))
    if few:
        console.print(f"[yellow]{few} questions kept fewer than {pcfg.num_paraphrases} paraphrases after the gate; "
                      "they are asked through fewer prompts (see 'paraphrase_gate' in their records).[/]")
    return out


def gate_record(entry: dict, kept: int, wanted: int, gate) -> dict:
    """What a run record says about an item's paraphrases: every candidate's similarity and fate."""
    rec = {"min_similarity": gate.min_similarity, "embedder": gate.embedder, "entity_guard": gate.entity_guard,
           "wanted": wanted, "kept": kept, "candidates": entry.get("checks", [])}
    if kept < wanted:
        rec["note"] = (f"only {kept} of {wanted} paraphrases passed the gate; asked through {kept + 1} prompts "
                       "instead of padding")
    return rec


def _screen_dataset_paraphrases(cfg: RunConfig, items: list[Item]) -> list[Item]:
    """--gate on a dataset that brings its own paraphrases: drop those that fail (no diversity cut)."""
    from selfensemble.paraphrase_gate import check

    gate = cfg.gate_config(generated=False)
    out = []
    for it in items:
        if not it.paraphrases:
            out.append(it)
            continue
        verdicts = check(it.question, list(it.paraphrases), gate)
        kept = [v.paraphrase for v in verdicts if v.kept]
        entry = {"checks": [v.to_dict() for v in verdicts]}
        meta = {**it.meta, "paraphrase_gate": gate_record(entry, len(kept), len(it.paraphrases), gate)}
        out.append(Item(it.id, (it.question, *kept), it.answers, it.group, meta))
    return out


def paraphrase_items(engine_factory, model: str, dataset: str, items: list[Item], pcfg, console, gate=None):
    """Write paraphrases for the items not in the on-disk cache; returns the cache.

    ``engine_factory()`` is called only when something is missing, so a fully cached dataset never
    loads the model. ``gate`` (a GateConfig, None = off) screens oversampled candidates.
    """
    from selfensemble.paraphrase import ParaphraseCache, gated_paraphrases

    cache = ParaphraseCache(model, dataset, pcfg, gate=gate)
    missing = [it for it in items if cache.get(it.question) is None]
    if not missing:
        return cache
    engine = engine_factory()
    t0 = time.perf_counter()
    per_question = pcfg.num_paraphrases * (gate.oversample if gate is not None and gate.enabled else 1)
    with progress_bar(console) as progress:
        task = progress.add_task("paraphrasing", total=len(missing) * per_question)
        entries = gated_paraphrases(engine, [it.question for it in missing], pcfg, gate,
                                    lambda n: progress.advance(task, n))
    cache.put_many({it.question: e for it, e in zip(missing, entries, strict=True)})
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


def _weights(engine, cfg: RunConfig, queries: list, console) -> list[list[float] | str]:
    """Per query: sampled confidence per prompt, or the name of a per-step rule (fusion.DYNAMIC_WEIGHTS)
    that the fusion derives from the logits themselves (no sampling, no extra forward passes)."""
    from selfensemble.confidence import ConfidenceCache, ConfidenceConfig, estimate
    from selfensemble.fusion import DYNAMIC_WEIGHTS

    if cfg.weights in DYNAMIC_WEIGHTS:
        return [cfg.weights for _ in queries]
    if cfg.weights != "confidence":
        raise SelfEnsembleError(f"Unknown --weights {cfg.weights!r}; use confidence, {', '.join(DYNAMIC_WEIGHTS)}.")

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
    if item.meta.get("paraphrase_gate"):
        rec["paraphrase_gate"] = item.meta["paraphrase_gate"]
        if "note" in item.meta["paraphrase_gate"]:
            rec["notes"] = [*rec.get("notes", []), item.meta["paraphrase_gate"]["note"]]
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
