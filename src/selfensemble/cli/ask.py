"""`ask` (one question, fused over its paraphrases) and `mask` (the flex mask as a picture)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from selfensemble import defaults
from selfensemble.cli.common import (
    ATTENTION_HELP,
    DEVICE_MAP_HELP,
    METHOD_HELP,
    MODEL_HELP,
    RESCALE_HELP,
    SCALE_HELP,
    TEMPERATURE_HELP,
    app,
    make_engine,
    parse_list,
)


@app.command()
def ask(
    question: str = typer.Argument(..., help="The original question (prompt 0)."),
    paraphrase: list[str] = typer.Option([], "--paraphrase", "-p", help="A paraphrase (repeatable)."),
    method: str = typer.Option("flex", "--method", "-m", help=METHOD_HELP),
    model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
    device: str = typer.Option("cpu", help="cpu | cuda | auto"),
    dtype: str = typer.Option("auto", help="auto | float32 | bfloat16 | float16"),
    device_map: str = typer.Option(None, help=DEVICE_MAP_HELP),
    revision: str = typer.Option(None, help="Hub revision (branch, tag or commit) of --model."),
    trust_remote_code: bool = typer.Option(False, help="Allow the model repo's own code (transformers' flag)."),
    max_new_tokens: int = typer.Option(16, help="Longest answer in tokens."),
    weights: str | None = typer.Option(None, help="weighted_* methods: one weight per prompt (e.g. 1,0.5,0.8), or "
                                                  "entropy | agreement (derived from each prompt's logits every step)"),
    layout: str = typer.Option(defaults.FLEX_LAYOUT, help="flex layout: shared (one prefix) | full (prefix per paraphrase)"),
    positions: str = typer.Option(defaults.FLEX_POSITIONS, help="flex positions: restart | right | sequential"),
    attention: str = typer.Option(None, help=ATTENTION_HELP),
    rescale: bool = typer.Option(defaults.FLEX_RESCALE, "--rescale/--no-rescale", help=RESCALE_HELP),
    fusion_temperature: float = typer.Option(defaults.FLEX_TEMPERATURE, help=TEMPERATURE_HELP),
    fusion_scale: float = typer.Option(defaults.FLEX_SCALE, help=SCALE_HELP),
    few_shot: bool = typer.Option(True, help="Prefix generic few-shot Q/A examples."),
    chat: bool = typer.Option(False, help="Wrap the prompt in the model's chat template."),
    sample: bool = typer.Option(False, help="Sample instead of greedy decoding."),
    temperature: float = typer.Option(1.0),
    top_p: float = typer.Option(1.0),
    top_k: int = typer.Option(0),
    seed: int = typer.Option(0),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
):
    """Answer QUESTION, fused over its paraphrases."""
    from selfensemble.decoding import GenerationConfig
    from selfensemble.methods import check_method
    from selfensemble.prompts import default_format

    check_method(method)
    prompts = [question, *paraphrase]
    gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature,
                           top_p=top_p, top_k=top_k, seed=seed)
    engine = make_engine(model, device, dtype, attention, layout, positions, rescale, seed=seed,
                         device_map=device_map, revision=revision, trust_remote_code=trust_remote_code,
                         fusion_temperature=fusion_temperature, fusion_scale=fusion_scale)
    t0 = time.perf_counter()
    from selfensemble.fusion import DYNAMIC_WEIGHTS

    w = weights.strip() if weights is not None and weights.strip() in DYNAMIC_WEIGHTS else parse_list(
        weights, f"--weights ({' | '.join(DYNAMIC_WEIGHTS)} or numbers)", float)
    ans = engine.answer(prompts, method, gen, default_format(few_shot, chat), w)
    seconds = time.perf_counter() - t0
    if as_json:
        out = {"answer": ans.answer, "method": method, "prompts": ans.prompts, "per_prompt": ans.per_prompt,
               "generation": ans.generation, "prob": ans.prob, "finish": ans.finish, "seconds": seconds,
               "attention": ans.attention, "model": model, "notes": ans.notes}
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    from rich.console import Console

    console = Console()
    for note in ans.notes:
        console.print(f"[yellow]note:[/] {note}")
    if ans.per_prompt is not None:
        for p, a in zip(ans.prompts, ans.per_prompt, strict=True):
            console.print(f"  [dim]{p}[/] → {a}")
    console.print(f"[bold]{ans.answer}[/]  [dim]({method}, p={ans.prob:.3f}, {seconds:.2f}s, {ans.attention})[/]")


@app.command()
def mask(
    question: str = typer.Argument(..., help="The original question."),
    paraphrase: list[str] = typer.Option([], "--paraphrase", "-p"),
    out: Path = typer.Option(Path("mask.png"), help="PNG to write."),
    layout: str = typer.Option("shared"),
    positions: str = typer.Option("restart"),
    few_shot: bool = typer.Option(False, help="Include the generic few-shot prefix (makes a big picture)."),
    model: str = typer.Option("smollm2-135m", help="Whose tokenizer to use. " + MODEL_HELP),
):
    """Draw the flex attention mask for QUESTION and its paraphrases."""
    from selfensemble.maskplot import layout_row, plot_mask
    from selfensemble.models import load_tokenizer
    from selfensemble.prompts import default_format

    row = layout_row(load_tokenizer(model), [question, *paraphrase], default_format(few_shot), layout, positions)
    path = plot_mask(row, out, title=f"flex mask, layout={layout}, positions={positions}")
    typer.echo(f"wrote {path} ({len(row.tokens)} prompt tokens)")
