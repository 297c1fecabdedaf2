"""`lm-eval`: run lm-evaluation-harness tasks with a self-ensembling method (no harness plugin needed)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import typer

from selfensemble.cli.common import METHOD_HELP, MODEL_HELP, app, parse_list
from selfensemble.cli.config_flags import config_flags
from selfensemble.config.engine import EngineConfig
from selfensemble.errors import SelfEnsembleError


def _model_args(text: str | None) -> dict:
    """'layout=full,rescale=true' → {'layout': 'full', 'rescale': True} (the harness's own parser)."""
    if not text:
        return {}
    from lm_eval.utils import simple_parse_args_string

    if any("=" not in kv for kv in text.split(",") if kv):
        raise SelfEnsembleError(f"--model-args takes key=value pairs separated by commas, got {text!r}.")
    return simple_parse_args_string(text)


@app.command("lm-eval")
@config_flags("engine_config", EngineConfig)
def lm_eval_command(
    tasks: str = typer.Option(..., help="Harness task names, comma-separated (built-in or from --include-path)."),
    include_path: Path = typer.Option(None, help="Folder of your own task YAMLs."),
    model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
    method: str = typer.Option("flex", help=METHOD_HELP),
    num_paraphrases: int = typer.Option(5, min=1, help="Prompts per question, the original included."),
    limit: int = typer.Option(None, min=1, help="At most this many documents per task."),
    device: str = typer.Option("cpu"),
    dtype: str = typer.Option("auto"),
    paraphrase_source: str = typer.Option("auto", help="auto (doc field 'paraphrases' if present, else "
                                          "model-written) | doc | generate"),
    variants: str = typer.Option("paraphrase", help="What the prompts vary, comma-separated: paraphrase | format | "
                                 "order (demos: the harness draws the demonstrations)"),
    variant_levels: int = typer.Option(None, min=1, help="Values per variant dimension (default: N)."),
    model_args: str = typer.Option(None, help="More engine options as key=value,... (as in the harness)."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("runs/lm-eval"), help="Folder for results.json and samples."),
    engine_config: EngineConfig = None,  # built from its flags by config_flags
):
    """Evaluate harness tasks with `method`; writes OUT/results.json and prints the harness's table."""
    try:
        from lm_eval.utils import make_table

        from selfensemble.integrations.lm_eval import SelfEnsembleLM, evaluate, task_manager
    except ImportError as err:
        raise SelfEnsembleError(f"lm-evaluation-harness is not installed ({err}); "
                                "pip install 'selfensemble[lm-eval]'.") from err
    if include_path is not None and not include_path.is_dir():
        raise SelfEnsembleError(f"--include-path {include_path} is not a folder.")
    names = parse_list(tasks, "--tasks")
    engine = {f.name: getattr(engine_config, f.name) for f in dataclasses.fields(engine_config)}
    batch_size = engine.pop("batch_size")
    options = {**engine, "device": device, "dtype": dtype, **_model_args(model_args)}  # model_args win
    options = {k: v for k, v in options.items() if v is not None}
    manager = task_manager(names, str(include_path) if include_path else None)  # before the model loads
    t0 = time.perf_counter()
    from rich.console import Console

    from selfensemble.cli.progress import ConsoleProgress

    lm = SelfEnsembleLM(model=model, method=method, num_paraphrases=num_paraphrases, batch_size=batch_size,
                        paraphrase_source=paraphrase_source, seed=seed, variants=variants,
                        variant_levels=variant_levels,
                        progress=ConsoleProgress(Console(stderr=True)), **options)  # paraphrasing shown on stderr
    loaded = time.perf_counter() - t0
    results = evaluate(lm, names, limit=limit, log_samples=True, manager=manager)
    seconds = time.perf_counter() - t0 - loaded
    out.mkdir(parents=True, exist_ok=True)
    summary = {"results": results["results"], "n-samples": results.get("n-samples"),
               "configs": results.get("configs"), "selfensemble": lm.report(),
               "seconds": {"load": round(loaded, 2), "evaluate": round(seconds, 2)}, "tasks": names, "limit": limit}
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str))
    for task, samples in (results.get("samples") or {}).items():
        with (out / f"samples_{task}.jsonl").open("w") as fh:
            for s in samples:
                fh.write(json.dumps(s, default=str, ensure_ascii=False) + "\n")
    typer.echo(make_table(results))
    counts = lm.report()["counts"]
    if not lm.plain:
        typer.echo(f"{counts['with_variants']} contexts asked through variants ({','.join(lm.variants)}), "
                   f"{counts['variants_unreadable']} whose demonstrations could not be read back (asked as plain)")
    typer.echo(f"{counts['contexts']} contexts, {counts['with_paraphrases']} asked through paraphrases, "
               f"{counts['no_question']} without a question to paraphrase (answered as is); "
               f"{seconds:.1f}s → {out / 'results.json'}")
