"""`run`, `paraphrase` and `interactive`: experiments over datasets."""

from __future__ import annotations

import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from selfensemble.cli.common import DEVICE_MAP_HELP, MIN_SIMILARITY_HELP, app, make_engine, parse_list
from selfensemble.cli.config_flags import config_flags
from selfensemble.cli.progress import ConsoleProgress
from selfensemble.cli.report import echo_outputs, show_report
from selfensemble.config.engine import EngineConfig
from selfensemble.config.gate import GateSettings
from selfensemble.config.load import LoadSpec
from selfensemble.config.run import RunConfig
from selfensemble.errors import SelfEnsembleError
from selfensemble.methods.registry import BUILTIN_METHODS
from selfensemble.pipeline.backends import BackendConfig
from selfensemble.pipeline.experiment import load_items, run_experiment
from selfensemble.pipeline.paraphrase.items import paraphrase_items

DATA_PANEL, METHODS_PANEL, MODEL_PANEL, RUN_PANEL = "Data", "Methods", "Model", "Run control"


@app.command("run")
@config_flags("engine_config", EngineConfig)
def run_command(
    dataset: str = typer.Option("webqa", help="webqa | pararel | myriadlama | jsonl | csv", rich_help_panel=DATA_PANEL),
    data_path: str = typer.Option(None, help="Local file/folder (default: ../shared/data when present).", rich_help_panel=DATA_PANEL),
    method: str = typer.Option(None, help=f"One method ({' | '.join(BUILTIN_METHODS)}, or an installed "
                                "plugin's); results go straight into --out.", rich_help_panel=METHODS_PANEL),
    methods: str = typer.Option(None, help="Several methods, comma-separated; one subfolder each.",
                                 rich_help_panel=METHODS_PANEL),
    num_paraphrases: int = typer.Option(5, min=1, help="Prompts per question, the original included.", rich_help_panel=METHODS_PANEL),
    limit: int = typer.Option(None, min=1, help="At most this many items.", rich_help_panel=DATA_PANEL),
    prompt_indices: str = typer.Option(None, help="Which prompts take part, e.g. 0,2,4.", rich_help_panel=METHODS_PANEL),
    variants: str = typer.Option("paraphrase", help="What the N prompts vary, comma-separated: paraphrase (wording) | "
                                 "format (surface) | demos (another draw of demonstrations) | order (demonstrations "
                                 "permuted); N of their product per item, variant 0 = the plain prompt", rich_help_panel=METHODS_PANEL),
    variant_levels: int = typer.Option(None, min=1, help="Values per variant dimension (default: "
                                       "--num-paraphrases); more than N asks each item a random N of them.", rich_help_panel=METHODS_PANEL),
    few_shot: int = typer.Option(5, help="Few-shot examples in the shared prefix.", rich_help_panel=METHODS_PANEL),
    demos: str = typer.Option("per-item", help="Few-shot demonstrations: per-item (drawn per item from its "
                              "relation's pool, blind to its gold) | other-groups (from other relations' pools: the "
                              "format without the relation's answer prior) | shared (one set per relation, the "
                              "older draw)", rich_help_panel=METHODS_PANEL),
    model: str = typer.Option("smollm2-135m", rich_help_panel=MODEL_PANEL),
    device: str = typer.Option("cpu", rich_help_panel=MODEL_PANEL),
    dtype: str = typer.Option("auto", rich_help_panel=MODEL_PANEL),
    device_map: str = typer.Option(None, help=DEVICE_MAP_HELP, rich_help_panel=MODEL_PANEL),
    revision: str = typer.Option(None, help="Hub revision (branch, tag or commit) of --model.", rich_help_panel=MODEL_PANEL),
    trust_remote_code: bool = typer.Option(False, help="Allow the model repo's own code (transformers' flag).", rich_help_panel=MODEL_PANEL),
    max_new_tokens: int = typer.Option(16, min=1, rich_help_panel=MODEL_PANEL),
    chat: bool = typer.Option(False, rich_help_panel=MODEL_PANEL),
    match: str = typer.Option("contains", help="Scorer behind `correct`: contains (gold inside the answer as "
                                               "whole words) | exact | partial (lenient, either way round)", rich_help_panel=METHODS_PANEL),
    confidence_samples: int = typer.Option(4, help="Samples per prompt for weighted_* confidence.", rich_help_panel=METHODS_PANEL),
    weights: str = typer.Option("confidence", help="weighted_*: confidence (sampled, --confidence-samples) | "
                                                   "entropy | agreement (per decode step, free) | FILE (dev-tuned "
                                                   "per-prompt weights from tune-weights; select needs one)", rich_help_panel=METHODS_PANEL),
    gate: bool = typer.Option(None, "--gate/--no-gate", help="Screen paraphrases by meaning (default: on for "
                                                            "generated ones, off for a dataset's own).", rich_help_panel=METHODS_PANEL),
    min_similarity: float = typer.Option(None, help=MIN_SIMILARITY_HELP, rich_help_panel=METHODS_PANEL),
    embedder: str = typer.Option("wordllama", help="Gate embedder: wordllama | minilm (extra gate-minilm).", rich_help_panel=METHODS_PANEL),
    entity_guard: bool = typer.Option(False, help="Gate: reject paraphrases that change or drop a name or number.", rich_help_panel=METHODS_PANEL),
    templates: str = typer.Option(None, help="myriadlama: manual | auto | mixed", rich_help_panel=DATA_PANEL),
    cloze_demo: str = typer.Option(None, help="pararel/myriadlama few-shot style: instruct (default) | single | "
                                   "multi | sentence", rich_help_panel=DATA_PANEL),
    relations: str = typer.Option(None, help="pararel/myriadlama: relations, e.g. P19,P20", rich_help_panel=DATA_PANEL),
    max_facts_per_relation: int = typer.Option(None, rich_help_panel=DATA_PANEL),
    question_column: str = typer.Option(None, help="jsonl/csv: question column (default 'question').", rich_help_panel=DATA_PANEL),
    answers_column: str = typer.Option(None, help="jsonl/csv: answers column (default 'answers').", rich_help_panel=DATA_PANEL),
    paraphrase_columns: str = typer.Option(None, help="jsonl/csv: paraphrase column(s), comma-separated.", rich_help_panel=DATA_PANEL),
    id_column: str = typer.Option(None, help="jsonl/csv: id column (default: line number).", rich_help_panel=DATA_PANEL),
    split: str = typer.Option("test", help="train | test | dev (choose settings here) | heldout (report "
                              "here once); dev + heldout = test", rich_help_panel=DATA_PANEL),
    seed: int = typer.Option(0, rich_help_panel=RUN_PANEL),
    out: Path = typer.Option(Path("runs/experiment"), help="Output folder.", rich_help_panel=RUN_PANEL),
    allow_mixed: bool = typer.Option(False, "--allow-mixed", help="Resume a run made under other torch/"
                                     "transformers/selfensemble versions or attention path; each new record "
                                     "then carries its own provenance.", rich_help_panel=RUN_PANEL),
    backend: str = typer.Option("local", help="local (this process) | ray (one Ray actor pool for the run; needs the 'ray' extra)", rich_help_panel=RUN_PANEL),
    ray_address: str = typer.Option(None, help="ray: 'auto' or HOST:PORT of a running cluster; default: a local Ray instance.", rich_help_panel=RUN_PANEL),
    workers: int = typer.Option(None, help="ray: actors in the pool, each loads the model once (default 2).", rich_help_panel=RUN_PANEL),
    gpus_per_worker: float = typer.Option(None, help="ray: GPUs per actor (default 0; use with --device cuda).", rich_help_panel=RUN_PANEL),
    cpus_per_worker: float = typer.Option(None, help="ray: CPUs per actor (default 1; also its torch threads).", rich_help_panel=RUN_PANEL),
    verbose: bool = typer.Option(False, "--verbose", help="ray: also show Ray's own output (actor stdout, token-auth "
                                 "notes, core-worker log lines); default: progress and errors only.", rich_help_panel=RUN_PANEL),
    engine_config: EngineConfig = None,  # built from its flags by config_flags
):
    """Run methods over a dataset; resumable (rerun the same command after a crash)."""
    if method and methods:
        raise SelfEnsembleError("Give --method or --methods, not both.")
    from selfensemble.pipeline.tuning import is_weights_file, load_weights

    if is_weights_file(weights):
        load_weights(weights)  # a typo or a wrong file: one clear line before anything loads
    chosen = parse_list(methods, "--methods") or [method or "origin"]
    options = {"templates": templates, "demo": cloze_demo, "relations": parse_list(relations, "--relations"),
               "max_facts_per_relation": max_facts_per_relation, "question_column": question_column,
               "answers_column": answers_column, "paraphrase_columns": parse_list(paraphrase_columns, "--paraphrase-columns"),
               "id_column": id_column}
    options = {k: v for k, v in options.items() if v is not None}
    cfg = RunConfig(dataset=dataset, data_path=data_path, split=split, limit=limit, methods=chosen,
                    num_paraphrases=num_paraphrases, prompt_indices=parse_list(prompt_indices, "--prompt-indices", int),
                    variants=parse_list(variants, "--variants"), variant_levels=variant_levels,
                    few_shot=few_shot, demos=demos, max_new_tokens=max_new_tokens, chat=chat, match=match,
                    confidence_samples=confidence_samples, dataset_options=options, out=str(out),
                    subfolders=method is None, allow_mixed=allow_mixed, weights=weights,
                    load=LoadSpec(model=model, device=device, dtype=dtype, seed=seed, device_map=device_map,
                                  revision=revision, trust_remote_code=trust_remote_code),
                    engine=engine_config,
                    gate=GateSettings(enabled=gate, min_similarity=min_similarity, embedder=embedder,
                                      entity_guard=entity_guard))
    backend_cfg = _backend_config(backend, ray_address, workers, gpus_per_worker, cpus_per_worker, verbose)
    with graceful_stop():
        run_experiment(cfg, backend=backend_cfg, progress=ConsoleProgress())
    if len(chosen) > 1:
        from selfensemble.analysis.report import report

        result = report([out], out / "report.png")
        show_report(result)
        echo_outputs(result)


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised where the run is (like Ctrl-C's KeyboardInterrupt), so every ``finally`` on
    the way out runs: stores close, progress bars end, nothing half-written is left behind."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def graceful_stop() -> Iterator[None]:
    """SIGTERM/SIGINT stop the command cleanly: what is saved stays saved (answers per item,
    paraphrases per engine call, confidence per batch), a line says how to resume, and the exit status is
    128 + the signal's number (143 for SIGTERM, 130 for Ctrl-C), never a traceback."""

    def on_term(signum, frame):
        raise Stopped(signum)

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        again = shlex.join(["selfensemble", *sys.argv[1:]])
        typer.echo(f"stopped by {signal.Signals(signum).name}: everything finished so far is saved; "
                   f"resume by running the same command again:\n  {again}", err=True)
        raise SystemExit(128 + signum) from None  # not typer.Exit: click returns that as a value
    finally:
        signal.signal(signal.SIGTERM, old)


def _backend_config(name: str, address: str | None, workers: int | None, gpus: float | None,
                    cpus: float | None, verbose: bool = False) -> BackendConfig:
    """--backend and its ray options; ray options with the local backend are an error, not ignored."""
    given = {"--ray-address": address, "--workers": workers, "--gpus-per-worker": gpus, "--cpus-per-worker": cpus,
             "--verbose": verbose or None}
    if name == "local" and any(v is not None for v in given.values()):
        flags = ", ".join(k for k, v in given.items() if v is not None)
        raise SelfEnsembleError(f"{flags} only apply to --backend ray.")
    pool = {k: v for k, v in (("workers", workers), ("gpus_per_worker", gpus), ("cpus_per_worker", cpus))
            if v is not None}
    return BackendConfig(name=name, address=address, verbose=verbose, **pool)


@app.command("paraphrase")
@config_flags("engine_config", EngineConfig, only=("batch_size",))  # the writer's engine: its batch size only
def paraphrase_command(
    dataset: str = typer.Option("webqa", rich_help_panel=DATA_PANEL),
    data_path: str = typer.Option(None, rich_help_panel=DATA_PANEL),
    num_paraphrases: int = typer.Option(5, help="Prompts per question, the original included (as in `run`): "
                                        "N - 1 paraphrases are written. Must be >= 2.", rich_help_panel=METHODS_PANEL),
    limit: int = typer.Option(None, rich_help_panel=DATA_PANEL),
    model: str = typer.Option("smollm2-135m", rich_help_panel=MODEL_PANEL),
    device: str = typer.Option("cpu", rich_help_panel=MODEL_PANEL),
    device_map: str = typer.Option(None, help=DEVICE_MAP_HELP, rich_help_panel=MODEL_PANEL),
    temperature: float = typer.Option(0.8),
    top_p: float = typer.Option(0.95),
    seed: int = typer.Option(0, rich_help_panel=RUN_PANEL),
    gate: bool = typer.Option(True, "--gate/--no-gate", help="Oversample 3x and keep the paraphrases that still "
                                                             "ask the question (most diverse first).", rich_help_panel=METHODS_PANEL),
    min_similarity: float = typer.Option(None, help=MIN_SIMILARITY_HELP, rich_help_panel=METHODS_PANEL),
    embedder: str = typer.Option("wordllama", help="Gate embedder: wordllama | minilm (extra gate-minilm).", rich_help_panel=METHODS_PANEL),
    entity_guard: bool = typer.Option(False, help="Gate: reject paraphrases that change or drop a name or number.", rich_help_panel=METHODS_PANEL),
    out: Path = typer.Option(Path("runs/paraphrases.jsonl"), rich_help_panel=RUN_PANEL),
    engine_config: EngineConfig = None,  # built from its flags by config_flags
):
    """Write paraphrases with the model itself into the shared cache (`run`, `ask`, `serve`, `lm-eval` reuse them)."""
    import json

    from rich.console import Console

    from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig

    if num_paraphrases < 2:
        raise SelfEnsembleError(
            f"--num-paraphrases {num_paraphrases}: it counts the prompts per question, the original included (as in "
            "`run` and `ask`), so 1 leaves no paraphrase to write; give N >= 2 to write N - 1 paraphrases. (It once "
            "counted the paraphrases besides the original: what --num-paraphrases K wrote then, K+1 writes now.)")
    console = Console()
    progress = ConsoleProgress(console)
    rcfg = RunConfig(dataset=dataset, data_path=data_path, limit=limit, load=LoadSpec(model=model, seed=seed),
                     gate=GateSettings(enabled=gate, min_similarity=min_similarity, embedder=embedder,
                                       entity_guard=entity_guard))
    _, items = load_items(rcfg)
    pcfg = ParaphraseConfig(num_paraphrases=num_paraphrases, temperature=temperature, top_p=top_p, seed=seed)
    console.print(f"N = {num_paraphrases} prompts per question: the original and {pcfg.wanted} written paraphrases "
                  "(--num-paraphrases counts the original, as in `run`)", soft_wrap=True)
    with graceful_stop():
        found = paraphrase_items(lambda: make_engine(model, device, config=engine_config,
                                                     device_map=device_map),
                                 model, items, pcfg, progress, rcfg.gate_config(generated=True))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as fh:
        for it in items:
            entry = found.entry(it.question) or {}
            row = {"id": it.id, "question": it.question, "answers": list(it.answers),
                   "paraphrases": entry.get("paraphrases"), "num_paraphrases": num_paraphrases}
            if gate:
                row["gate"] = entry.get("checks", [])
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    console.print(f"wrote {out} (cache: {found.path})", soft_wrap=True)


@app.command("interactive")
def interactive_command():
    """Choose dataset, model, method and parameters step by step, then run (or ask questions)."""
    try:
        return _interactive()
    except EOFError:  # every prompt comes before the run starts, so nothing has run yet
        raise SelfEnsembleError("interactive reached the end of its input before every choice was made, so "
                                "nothing ran. It asks on a terminal; in scripts use `selfensemble run` or "
                                "`selfensemble ask` with flags.") from None


def _interactive() -> None:
    from rich.console import Console
    from rich.prompt import IntPrompt, Prompt

    from selfensemble.config.demos import DEFAULT_DEMOS, DEMO_MODES
    from selfensemble.data import DATASETS, default_data_dir
    from selfensemble.methods.registry import METHODS

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
        console.print("[yellow]no local data folder found: the hub is tried, else the bundled sample is read[/]")
    methods = Prompt.ask(f"Methods (comma-separated, from {', '.join(METHODS)})", default="origin,avg,flex")
    n = IntPrompt.ask("Prompts per question (N, original included)", default=5)
    limit = IntPrompt.ask("How many items", default=20)
    demos = Prompt.ask("Few-shot demonstrations", choices=list(DEMO_MODES), default=DEFAULT_DEMOS)
    out = Prompt.ask("Output folder", default=f"runs/{dataset}")
    cfg = RunConfig(dataset=dataset, data_path=path, methods=parse_list(methods, "Methods"), num_paraphrases=n, limit=limit,
                    demos=demos, load=LoadSpec(model=model), out=out)
    console.print(f"[dim]same as: selfensemble run --dataset {dataset} --methods {methods} "
                  f"--num-paraphrases {n} --limit {limit} --demos {demos} --model {model} --out {out}[/]")
    with graceful_stop():
        run_experiment(cfg, progress=ConsoleProgress(console))
    from selfensemble.analysis.report import report

    result = report([Path(out)], Path(out) / "report.png")
    show_report(result, console=console)
    echo_outputs(result)


def _interactive_ask(console, model: str) -> None:
    from rich.prompt import Prompt

    from selfensemble.engine.prompts import default_format
    from selfensemble.methods.registry import METHODS, check_method

    method = check_method(Prompt.ask("Method", choices=list(METHODS), default="flex"))
    with console.status(f"loading {model} (the first load takes ~15-30 s)…"):
        engine = make_engine(model)
    console.print(f"[dim]{model} loaded; attention: {engine.attention_note}[/]")
    while True:
        question = _ask_or_empty("Question (empty to quit)")
        if not question:
            return
        paras = []
        while p := _ask_or_empty(f"  paraphrase {len(paras) + 1} (empty when done)"):
            paras.append(p)
        try:
            ans = engine.answer([question, *paras], method, fmt=default_format())
        except SelfEnsembleError as err:
            console.print(f"[red]error:[/] {err}")
            continue
        console.print(f"[bold]{ans.answer}[/]  [dim](p={ans.prob:.3f}, {ans.seconds:.2f}s)[/]")


def _ask_or_empty(text: str) -> str:
    """A line of input; the end of a piped input reads as an empty line (done), not as an interruption."""
    from rich.prompt import Prompt

    try:
        return Prompt.ask(text, default="")
    except EOFError:
        return ""
