"""`serve`: the HTTP API and the comparison page (the model is loaded once)."""

from __future__ import annotations

import dataclasses

import typer

from selfensemble.cli.common import MODEL_HELP, app, make_engine
from selfensemble.cli.config_flags import config_flags
from selfensemble.config.engine import EngineConfig


@app.command()
@config_flags("engine_config", EngineConfig, skip=("batch_size",))  # --max-batch sizes the engine's batches
def serve(
    model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000),
    max_batch: int = typer.Option(8, min=1, help="Most requests answered by one engine call (1: no batching)."),
    batch_window_ms: float = typer.Option(10.0, min=0, help="How long the first request waits for neighbours."),
    device: str = typer.Option("cpu", help="cpu | cuda | auto"),
    dtype: str = typer.Option("auto", help="auto | float32 | bfloat16 | float16"),
    threads: int = typer.Option(0, help="torch intra-op threads (0: torch's default)."),
    seed: int = typer.Option(0, help="Seed for random:<arch> weights."),
    paraphrase_budget_s: float = typer.Option(
        None, min=0, show_default="30",  # serve.app.PARAPHRASE_BUDGET_S (not imported here: the serve extra)
        help="Seconds of paraphrase writing a request may wait for (checked before each engine call of the "
        "writer); past it the request is answered through the paraphrases written so far, its notes say so, and "
        "the next request for the question continues the writing. 0: cached paraphrases only."),
    engine_config: EngineConfig = None,  # built from its flags by config_flags
):
    """Serve POST /v1/ensemble, an OpenAI-compatible /v1/chat/completions and a page at /."""
    from rich.console import Console

    from selfensemble.cli.progress import ConsoleProgress
    from selfensemble.serve import create_app, run_server  # a one-line error naming the pip extra if absent

    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    config = dataclasses.replace(engine_config, batch_size=max_batch)
    engine = make_engine(model, device, dtype, config, seed=seed)
    paths = engine.attention_paths
    typer.echo(f"selfensemble serve: {model} (prefill {paths['prefill']}, decode {paths['decode']}: "
               f"{engine.attention_note}), max batch {max_batch}; "
               f"page at http://{host}:{port}/")
    budget = {} if paraphrase_budget_s is None else {"paraphrase_budget_s": paraphrase_budget_s}
    app = create_app(engine, model, max_batch, batch_window_ms / 1000, **budget,
                     progress=ConsoleProgress(Console(stderr=True)))  # paraphrase writing shown as `run` shows it
    run_server(app, host, port)
