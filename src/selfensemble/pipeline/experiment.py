"""Experiments end to end: dataset → paraphrases → (confidence) → every method → scored, resumable runs.

One model load serves all methods; each method writes its own run folder (results.jsonl,
metrics.json, manifest.json). Items already in a run's results are skipped, so a killed run
resumes where it stopped. Timing is measured after a warm-up batch, so methods compare fairly.

run_experiment wraps the engine once (a Backend) and runs the phases in order, each from the module
that holds it: the prompts (paraphrase/items.py), the queries (build.py), per method the weights it
needs (confidence.py) and its run folder (here: run_method). Settings were checked when the
RunConfig was built; what needs the data and the folders is checked here before the model loads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfensemble.analysis.report import summarize
from selfensemble.config.generation import GenerationConfig
from selfensemble.config.run import RunConfig, nested_config
from selfensemble.data import load_dataset
from selfensemble.data.base import Dataset, Item
from selfensemble.errors import ConfigError, ResumeError, SelfEnsembleError
from selfensemble.methods.registry import get_method
from selfensemble.pipeline.backends import Backend, BackendConfig, as_backend, open_backend
from selfensemble.pipeline.build import build_queries, load_run_weights
from selfensemble.pipeline.confidence import query_weights
from selfensemble.pipeline.paraphrase.items import ensure_paraphrases
from selfensemble.pipeline.progress import NotesConsole, Progress, as_progress, phase
from selfensemble.pipeline.timing import cpu_count, machine_load
from selfensemble.pipeline.tuning import file_sha256, is_weights_file
from selfensemble.store.provenance import attention_paths
from selfensemble.store.record_view import RecordView
from selfensemble.store.records import demo_answers, example_answers, make_record, rescored, vote_record
from selfensemble.store.resume import item_differences
from selfensemble.store.run_store import RunStore, check_resumable, load_run

__all__ = ["SAMPLE_DATA", "check_before_load", "load_items", "run_experiment", "run_method"]

if TYPE_CHECKING:  # engine.queries loads torch; annotations only
    from selfensemble.engine.queries import Answer, Query

SAMPLE_DATA = Path(__file__).parents[1] / "samples" / "trivia.jsonl"


def load_items(cfg: RunConfig) -> tuple[Dataset, list[Item]]:
    """The run's dataset and its items (``cfg.limit`` of them, sampled with the run's seed)."""
    ds = load_dataset(cfg.dataset, cfg.data_path, split=cfg.split, limit=cfg.limit, seed=cfg.seed,
                      **cfg.dataset_options)
    if not ds.items:
        raise SelfEnsembleError(f"Dataset {cfg.dataset!r} gave no items (check data_path / limit).", arguments=("data_path", "limit"))
    return ds, list(ds.items)


def _stats_delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before.get(k, 0) for k in after}


def _finish(store: RunStore, backend: Backend, cfg: RunConfig, method: str, session: dict) -> dict:
    """Metrics over every record, and this session's facts in the manifest (one entry per session)."""
    records = RecordView.all(rescored(store.records(), cfg.match))  # older records of a resumed run: today's rules
    manifest = store.manifest()
    sessions = manifest.get("sessions") or [{}]
    sessions[-1] = {**sessions[-1], **session}
    seen = {json.dumps(attention_paths(r.attention), sort_keys=True) for r in records if r.attention is not None}
    # the note describes the manifest's attention_path, the first session's: set once, never overwritten
    note = {} if manifest.get("attention_note") else {"attention_note": backend.attention_note}
    manifest = store.update_manifest(sessions=sessions, engine_stats=session.get("engine_stats"),
                                     **backend.provenance(), attention_paths=[json.loads(p) for p in sorted(seen)],
                                     **note)
    metrics = summarize(records, manifest)  # after: this session's load average is in the manifest now
    metrics.update(method=method, model=cfg.load.model, dataset=cfg.dataset, num_paraphrases=cfg.num_paraphrases,
                   variants=list(cfg.variants), attention=backend.attention_paths,
                   attention_note=backend.attention_note)
    store.write_metrics(metrics)
    return metrics


def _open_store(backend: Backend, cfg: RunConfig, method: str, out: Path) -> RunStore:
    # a Ray pool learns its attention path from its first answers (see _answer_todo)
    path = backend.attention_paths if backend.attention_known else None
    config = cfg.method_config(method)
    if is_weights_file(cfg.weights):  # another file under the same name is another run
        config["weights_sha256"] = file_sha256(cfg.weights)
    return RunStore(out, config, attention_path=path, allow_mixed=cfg.allow_mixed,
                    upgrade=nested_config).open()  # a folder from before nested manifests resumes


def _asked(backend: Backend, cfg: RunConfig, method: str, queries: list[Query], progress: Progress) -> list[Query]:
    """The queries as ``method`` asks them: with this run's weights when it needs weights (new Query
    objects: the run's queries are shared by every method and never changed), else as they are."""
    if not get_method(method).needs_weights:
        return queries
    weights = query_weights(backend, cfg, queries, progress)
    return [replace(q, weights=w) for q, w in zip(queries, weights, strict=True)]


def _answer_todo(backend: Backend, cfg: RunConfig, method: str, items: list[Item], queries: list[Query],
                 todo: list[int], store: RunStore, progress: Progress) -> dict:
    """Decode the items at ``todo`` and append their records; returns this session's timing and stats.

    A warm-up batch (compiles, allocator, prefix KV) runs first and its answers are discarded, so
    the timed pass and its ``engine_stats`` count this method's questions only.
    """
    # pipeline.variants loads torch (through the engine); this module is imported when the CLI starts
    from selfensemble.pipeline.variants import recorded_variants

    asked = _asked(backend, cfg, method, [queries[i] for i in todo], progress)
    weighted = get_method(method).needs_weights
    if todo and backend.warm_up:  # a Ray pool warms its own actors
        backend.answer_many(asked[: backend.config.batch_size], method, _gen(cfg))
    t0, compiles, before, load0 = time.perf_counter(), backend.compile_count, dict(backend.stats), machine_load()

    def on_done(j: int, answer: Answer) -> None:
        i, q = todo[j], asked[j]
        if store.session["attention_path"] is None:
            store.learn_attention_path(answer.attention)
        rec = make_record(items[i], answer, method, cfg.match, q.weights if weighted else None)
        store.append({**rec, "demo_answers": demo_answers(q), "variants": recorded_variants(q)})
        progress.advance()

    with phase(progress, method, len(items), done=len(items) - len(todo)):
        backend.answer_many(asked, method, _gen(cfg), on_done=on_done)
    return {"wall_time_s": time.perf_counter() - t0, "compiles_during_run": backend.compile_count - compiles,
            "items_this_session": len(todo), "engine_stats": _stats_delta(backend.stats, before),
            "load_average": [load0, machine_load()], "cpus": cpu_count()}  # report warns when load > cpus


def _derive_todo(source: Path, derive: Callable[[dict], dict], items: list[Item], todo: list[int],
                 store: RunStore) -> dict:
    """Append records derived from another run's records (``derive(record) -> record``); no decoding."""
    _, records, _ = load_run(source)
    by_id = {r.id: r.raw for r in RecordView.all(records)}  # derive writes a record: it takes the stored dict
    missing = [items[i].id for i in todo if items[i].id not in by_id]
    if missing:
        raise SelfEnsembleError(f"{source} lacks items {missing[:5]} needed to derive this run.")
    for i in todo:
        store.append(derive(by_id[items[i].id]))
    return {"items_this_session": len(todo), "derived_from": str(source), "engine_stats": None}


def _check_stored_items(path: Path, records: list[dict], moved: dict, items: list[Item],
                        demos: dict[str, list[str]] | None, cfg: RunConfig) -> None:
    """Refuse to add to answers of items that read differently now (data edited, or another file
    under a moved path); nothing is written. ``demos``: {item id: records.example_answers of its
    demonstrations now}."""
    found = item_differences(records, items, question_first=cfg.prompt_indices is None, demos=demos)
    if found:
        where = "".join(f"; {k} moved from {a!r} to {b!r}" for k, (a, b) in moved.items())
        raise ResumeError(
            f"{path} holds answers to items that differ from the data loaded now ({'; '.join(found)}"
            f"{where}). Resuming would mix both; use the original data or another output directory.")


def check_before_load(cfg: RunConfig, items: list[Item], examples: dict[str, tuple],
                      folders: dict[str, Path]) -> None:
    """The run folders' checks, run before the model loads (tens of seconds): the settings alone
    were checked when ``cfg`` was built (RunConfig.__post_init__), --weights by build.load_run_weights.

    Each method folder that already holds a run: same settings and library versions
    (run_store.check_resumable), not in use by another process, and stored answers that answer
    the items as loaded now (gold, question, demonstrations). ``examples``: {item id: its few-shot
    demonstrations}; ``folders``: {method: its run folder}.
    """
    # a variants run shows several demonstration sets per item, drawn with its prompts: compared at run_method
    demos = {str(it.id): example_answers(examples[str(it.id)]) for it in items} if cfg.is_plain() else None
    for method, folder in folders.items():
        found = check_resumable(folder, cfg.method_config(method), upgrade=nested_config, allow_mixed=cfg.allow_mixed)
        _check_stored_items(folder, found.records, found.moved, items, demos, cfg)


def _one_prompt_note(cfg: RunConfig, queries: list[Query]) -> str | None:
    """A line for the console when methods that combine prompts get one prompt for some items."""
    combining = [m for m in cfg.methods if get_method(m).combines_prompts]
    alone = sum(len(q.prompts) == 1 for q in queries)
    if not combining or not alone:
        return None
    what = f"{alone} of {len(queries)} items have" if alone < len(queries) else "every item has"
    return (f"{what} one prompt: {', '.join(combining)} had nothing to combine there, so those answers are "
            "that prompt's own (what origin gives); their records say so in 'notes'.")


def run_method(backend: Backend, cfg: RunConfig, method: str, items: list[Item], queries: list[Query], out: Path,
               progress=None, derive_from: Path | None = None) -> dict:
    """Answer every item not yet in ``out``'s results; returns the run's metrics.

    ``backend``: what answers (backends.as_backend wraps an Engine the caller loaded); ``items`` and
    ``queries``: parallel lists, one Query per item (build.build_queries), left unchanged.
    ``progress``: a progress.Progress (or a console: notes only).
    ``derive_from`` (vote, select): build the records from that per_prompt run's records instead of decoding.
    """
    progress = as_progress(console=progress)
    store = _open_store(backend, cfg, method, out)
    try:
        demos = {str(it.id): demo_answers(q) for it, q in zip(items, queries, strict=True)}
        _check_stored_items(store.path, store.records(), store.moved, items, demos, cfg)
        done = store.done_ids()
        todo = [i for i, it in enumerate(items) if it.id not in done]
        if derive_from is not None:
            weights = {str(it.id): q.weights for it, q in zip(items, queries, strict=True)}  # select's, from a file
            session = _derive_todo(derive_from, lambda rec: vote_record(rec, method, weights.get(str(rec["id"]))),
                                   items, todo, store)
        else:
            session = _answer_todo(backend, cfg, method, items, queries, todo, store, progress)
        return _finish(store, backend, cfg, method, session)
    finally:
        store.close()


def _gen(cfg: RunConfig) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)


def _open_backend(cfg: RunConfig, engine: Any, backend: BackendConfig | None, progress: Progress) -> Backend:
    """The run's one Backend: ``engine`` wrapped (the caller's: left open) or one loaded now (closed by the run)."""
    if engine is not None:
        return as_backend(engine)
    with phase(progress, "loading", 1, unit="models"):
        loaded = open_backend(backend or BackendConfig(), cfg.load, cfg.engine, NotesConsole(progress))
        progress.advance()
    return loaded


def run_experiment(cfg: RunConfig, console=None, engine=None, backend: BackendConfig | None = None, progress=None,
                   then: Callable[[Backend, list[Query]], Any] | None = None) -> dict[str, dict]:
    """Run every method of ``cfg`` over the dataset; returns {method: metrics}.

    ``backend`` (a backends.BackendConfig; default local) says where the engines run; an
    ``engine`` given by the caller (an Engine, an engine-like stub or a Backend, already loaded) is
    used as is. Either way it is wrapped here, once, and the Backend passed down. ``progress``
    (a progress.Progress) hears every phase: loading, paraphrasing, confidence, each method; with
    only a ``console`` its notes are printed there and no bars drawn (the CLI draws those).
    ``cfg`` checked its settings when it was built; every other check that can refuse the run
    (:func:`check_before_load`) runs before the model loads.
    ``then(backend, queries)``, if given, runs after the last method while the engine is still
    loaded (the demo times the methods there); ``queries`` are the run's, as build.build_queries made them.
    """
    progress = as_progress(progress, console)
    weights = load_run_weights(cfg)
    ds, items = load_items(cfg)
    if cfg.few_shot > 0:
        ds.demo_pool(items[0], cfg.demos)  # --demos other-groups on a one-pool dataset: refused before loading
    if engine is not None and backend is not None:
        raise ConfigError("run_experiment takes an engine or a backend config, not both")
    out = Path(cfg.out)
    folders = {m: out / m if cfg.subfolders else out for m in cfg.methods}
    examples = {str(it.id): tuple(ds.few_shot(it, cfg.few_shot, cfg.seed, cfg.demos)) for it in items}
    check_before_load(cfg, items, examples, folders)
    answerer = _open_backend(cfg, engine, backend, progress)
    try:
        items = ensure_paraphrases(answerer, replace(cfg, num_paraphrases=cfg.paraphrases_needed()), items, progress)
        items, queries = build_queries(ds, items, cfg, weights)
        results = _run_methods(answerer, cfg, items, queries, folders, progress)
        if then is not None:
            then(answerer, queries)
        return results
    finally:
        if engine is None:  # ours: loaded above
            answerer.close()


def _run_methods(backend: Backend, cfg: RunConfig, items: list[Item], queries: list[Query],
                 folders: dict[str, Path], progress: Progress) -> dict[str, dict]:
    """Every method of the run, a derived one (vote) after the run it derives from; {method: metrics}."""
    # pipeline.variants loads torch (through the engine); this module is imported when the CLI starts
    from selfensemble.pipeline.variants import short_note

    if (note := short_note(queries, cfg)) is not None:
        progress.note(f"[yellow]{note}[/]")
    if note := _one_prompt_note(cfg, queries):
        progress.note(note)
    sources = {m: get_method(m).derived_from for m in cfg.methods}
    derived = {m: folders[s] for m, s in sources.items() if s in folders}  # vote from per_prompt's records
    results = {}
    for method in sorted(cfg.methods, key=lambda m: m in derived):  # per_prompt before the vote it feeds
        results[method] = m = run_method(backend, cfg, method, items, queries, folders[method], progress,
                                         derive_from=derived.get(method))
        how = f" (derived from {sources[method]}'s answers)" if method in derived else ""
        progress.note(f"{method}: accuracy {m['accuracy']:.3f} over {m['n']} items, echo {m['echo_rate'] or 0:.1%}, "
                      f"{m['seconds_per_item']:.3f} s/question{how} → {folders[method]}")
    return {m: results[m] for m in cfg.methods}
