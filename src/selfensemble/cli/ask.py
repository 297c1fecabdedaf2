"""`ask` (one question, fused over its paraphrases) and `mask` (the flex mask as a picture)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import typer

from selfensemble.cli.common import DEVICE_MAP_HELP, METHOD_HELP, MODEL_HELP, app, make_engine, parse_list
from selfensemble.cli.config_flags import config_flags
from selfensemble.config.engine import EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.errors import SelfEnsembleError

#: The GenerationConfig fields `ask` takes as flags (--seed, its own, also seeds the paraphrase writer).
ASK_GENERATION_FLAGS = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k")


@app.command()
@config_flags("engine_config", EngineConfig)
@config_flags("generation", GenerationConfig, only=ASK_GENERATION_FLAGS)
def ask(
    question: str = typer.Argument(..., help="The original question (prompt 0)."),
    paraphrase: list[str] = typer.Option([], "--paraphrase", "-p", help="A paraphrase (repeatable)."),
    num_paraphrases: int = typer.Option(None, min=1, show_default="5", help="Without -p: prompts per question, the "
                                        "original included; the model writes the rest, gated as `run` does."),
    no_paraphrase: bool = typer.Option(False, "--no-paraphrase", help="Without -p: answer through the question "
                                       "alone (no paraphrases written)."),
    method: str = typer.Option("flex", "--method", "-m", help=METHOD_HELP),
    model: str = typer.Option("smollm2-135m", help=MODEL_HELP),
    device: str = typer.Option("cpu", help="cpu | cuda | auto"),
    dtype: str = typer.Option("auto", help="auto | float32 | bfloat16 | float16"),
    device_map: str = typer.Option(None, help=DEVICE_MAP_HELP),
    revision: str = typer.Option(None, help="Hub revision (branch, tag or commit) of --model."),
    trust_remote_code: bool = typer.Option(False, help="Allow the model repo's own code (transformers' flag)."),
    weights: str | None = typer.Option(None, help="weighted_* methods: one weight per prompt (e.g. 1,0.5,0.8), or "
                                                  "entropy | agreement (derived from each prompt's logits every step)"),
    few_shot: bool = typer.Option(True, help="Prefix generic few-shot Q/A examples."),
    chat: bool = typer.Option(False, help="Wrap the prompt in the model's chat template."),
    seed: int = typer.Option(0),
    variants: str = typer.Option("paraphrase", help="What the prompts vary, comma-separated: paraphrase | format | "
                                 "demos | order (N = --num-paraphrases of their product; prompt 0 = the plain prompt)"),
    variant_levels: int = typer.Option(None, min=1, help="Values per variant dimension (default: N)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    stream: bool = typer.Option(False, "--stream", help="Print the answer as it is decoded (stdout), then the "
                                "notes. Not with --json, nor --method vote (it picks its answer at the end)."),
    engine_config: EngineConfig = None,  # built from its flags by config_flags
    generation: GenerationConfig = None,  # likewise; its seed is --seed
):
    """Answer QUESTION, fused over its paraphrases (given with -p, else written by the model and gated)."""
    from selfensemble.config.variants import DEFAULT_VARIANTS, parse_variants
    from selfensemble.engine.prompts import default_format
    from selfensemble.methods.registry import one_prompt_note

    # everything the user typed is checked here, before the model loads (~17 s for the embedded one)
    dims = parse_variants(parse_list(variants, "--variants"))
    plain = dims == DEFAULT_VARIANTS and variant_levels is None
    if plain:
        wanted = _prompt_plan(question, paraphrase, num_paraphrases, no_paraphrase, method)
        w = _check_weights(weights, method, len(paraphrase) + 1 if paraphrase or no_paraphrase else None)
    else:
        wanted = _variant_plan(question, paraphrase, dims, num_paraphrases, variant_levels, no_paraphrase, few_shot)
        w = _check_weights(weights, method, None, "the variants are drawn when the model runs")
    if stream:
        _check_stream(method, as_json)
    gen = dataclasses.replace(generation, seed=seed)
    engine = make_engine(model, device, dtype, engine_config, seed=seed, device_map=device_map, revision=revision,
                         trust_remote_code=trust_remote_code)
    t0 = time.perf_counter()
    prompts, notes, gate = _prompts(engine, model, question, paraphrase, wanted, no_paraphrase, method, seed)
    recorded = None
    if plain:
        from selfensemble.engine.queries import Query

        query = Query(prompts, default_format(few_shot, chat), w)
    else:
        from selfensemble.engine.variants import variant_query

        query = dataclasses.replace(variant_query(prompts, dims, num_paraphrases or DEFAULT_PROMPTS,
                                                  default_format(few_shot, chat), variant_levels, seed), weights=w)
        recorded = [query.variants[i] for i in query.kept_indices()]
    ans = _answer(engine, query, method, gen, stream)
    seconds = time.perf_counter() - t0
    # avg/flex/vote over one prompt: origin's answer (said already when --no-paraphrase asked for one)
    one = None if no_paraphrase else one_prompt_note(method, len(ans.prompts))
    notes = [*notes, *ans.notes, *([one] if one else []), f"attention: {ans.attention_note}"]
    if as_json:
        out = {"answer": ans.answer, "method": method, "prompts": ans.prompts, "per_prompt": ans.per_prompt,
               "generation": ans.generation, "prob": ans.prob, "finish": ans.finish, "seconds": seconds,
               "attention": ans.attention, "model": model, "notes": notes, "variants": recorded}
        if gate:
            out["paraphrase_gate"] = gate
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    for note in notes[:-1]:  # the attention note is the answer line's last part
        console.print(f"[yellow]note:[/] {escape(note)}")
    if ans.per_prompt is not None:
        labels = [json.dumps(v) for v in recorded] if recorded else ans.prompts
        for p, a in zip(labels, ans.per_prompt, strict=True):
            console.print(f"  [dim]{escape(p)}[/] → {escape(a)}")
    shown = "" if stream else f"[bold]{escape(ans.answer)}[/]  "  # a streamed answer is printed already
    console.print(f"{shown}[dim]({method}, p={ans.prob:.3f}, {seconds:.2f}s, "
                  f"prefill {ans.attention['prefill']}, decode {ans.attention['decode']})[/]")


def _check_stream(method: str, as_json: bool) -> None:
    from selfensemble.engine.streaming import check_streamable

    if as_json:
        raise SelfEnsembleError("--stream prints the answer as it comes; --json prints one object: give one of them.")
    check_streamable(method)


def _answer(engine, query, method: str, gen, stream: bool):
    """The Answer; with ``stream`` its text is printed to stdout as it is decoded (then a newline)."""
    if not stream:
        return engine.answer_many([query], method, gen)[0]
    import sys

    from selfensemble.engine.streaming import TextDeltas

    def show(delta: str) -> None:
        sys.stdout.write(delta)
        sys.stdout.flush()

    ans = engine.answer_many([query], method, gen, streams=[TextDeltas(engine.lm.tokenizer, gen, show)])[0]
    sys.stdout.write("\n")
    return ans


def _prompt_plan(question: str, given: list[str], num_paraphrases: int | None, no_paraphrase: bool,
                 method: str) -> int:
    """Check the prompt options; returns N, the prompts to ask through with the question included
    (1: the model writes no paraphrase)."""
    import warnings

    from selfensemble.engine.prompts import clean_prompts
    from selfensemble.methods.registry import get_method

    alone = get_method(method).asks_original_only  # origin: the question alone
    if given and (no_paraphrase or num_paraphrases is not None):
        raise SelfEnsembleError("-p gives the paraphrases; --no-paraphrase and --num-paraphrases apply only "
                                "without -p.")
    if no_paraphrase and num_paraphrases is not None:
        raise SelfEnsembleError("Give --no-paraphrase or --num-paraphrases, not both.")
    if alone and num_paraphrases is not None:
        raise SelfEnsembleError(f"--method {method} asks the question alone; --num-paraphrases does not apply.")
    with warnings.catch_warnings():  # duplicates are noted by the engine when it answers
        warnings.simplefilter("ignore")
        clean_prompts([question, *given])
    if given or no_paraphrase or alone:  # given paraphrases, or the question alone: nothing to write
        return 1
    return DEFAULT_PROMPTS if num_paraphrases is None else num_paraphrases


DEFAULT_PROMPTS = 5  # `ask` without -p: prompts per question, as `run --num-paraphrases`


def _variant_plan(question: str, given: list[str], dims: tuple[str, ...], n: int | None, levels: int | None,
                  no_paraphrase: bool, few_shot: bool) -> int:
    """Check the options of a --variants question; returns the wordings to ask through, the question
    included (1: the model writes no paraphrase).

    N prompts (--num-paraphrases, default 5) are drawn from the product of ``dims``; the paraphrase
    dimension takes the -p paraphrases, else --variant-levels (default N) - 1 written ones.
    """
    from selfensemble.engine.prompts import clean_prompts

    if no_paraphrase and (given or "paraphrase" in dims):
        raise SelfEnsembleError("--no-paraphrase asks the question in one wording: drop it, or drop paraphrase "
                                "from --variants.")
    if given and "paraphrase" not in dims:
        raise SelfEnsembleError("-p gives paraphrases, but --variants does not vary the wording: add paraphrase.")
    if not few_shot and {"demos", "order"} & set(dims):
        raise SelfEnsembleError("--variants demos/order vary the demonstrations: drop --no-few-shot.")
    clean_prompts([question, *given])
    if "paraphrase" not in dims or given:
        return 1
    return levels or n or DEFAULT_PROMPTS


def _check_weights(weights: str | None, method: str, n_prompts: int | None,
                   unknown: str = "the model writes a number of paraphrases not known in advance"
                   ) -> list[float] | str | None:
    """--weights as the engine takes it, checked against the method and the prompt count (None: not
    known yet, for the reason ``unknown``)."""
    from selfensemble.methods.fusion import DYNAMIC_WEIGHTS, normalise_weights
    from selfensemble.methods.registry import Rows, get_method

    spec = get_method(method)
    if weights is not None and weights.strip() in DYNAMIC_WEIGHTS:
        if spec.rows is Rows.CHOSEN:
            raise SelfEnsembleError(f"Method {method} answers through the prompt with the largest weight: give "
                                    f"one number per prompt with --weights, not the rule {weights.strip()!r}.")
        return weights.strip()
    w = parse_list(weights, f"--weights ({' | '.join(DYNAMIC_WEIGHTS)} or numbers)", float)
    if spec.needs_weights and w is None:
        raise SelfEnsembleError(f"Method {method} needs one weight per prompt (e.g. --weights 1,0.5,...)"
                                + ("." if spec.rows is Rows.CHOSEN
                                   else f" or a per-step rule ({', '.join(DYNAMIC_WEIGHTS)})."))
    if w is None or not spec.needs_weights:
        return w  # other methods ignore weights (the engine says nothing either)
    if n_prompts is None:
        raise SelfEnsembleError(f"Numeric --weights need the prompts given with -p ({unknown}); "
                                f"or use --weights {' | '.join(DYNAMIC_WEIGHTS)}.")
    if len(w) != n_prompts:
        raise SelfEnsembleError(f"Method {method} got {len(w)} weights for {n_prompts} prompts; give one per prompt.")
    try:
        normalise_weights(w, n_prompts)
    except ValueError as err:
        raise SelfEnsembleError(f"--weights: {err}.") from None
    return w


def _prompts(engine, model: str, question: str, given: list[str], n_prompts: int, no_paraphrase: bool,
             method: str, seed: int) -> tuple[list[str], list[str], dict | None]:
    """(prompts, notes, gate record): the given paraphrases, else ``n_prompts`` prompts, the question and
    ``n_prompts - 1`` written ones (gated)."""
    if given:
        return [question, *given], [], None
    if no_paraphrase:
        return [question], ["answered through the question alone (--no-paraphrase)"], None
    if n_prompts == 1:  # origin, or --num-paraphrases 1: the question alone, nothing written
        return [question], [], None
    from rich.console import Console

    from selfensemble.cli.progress import ConsoleProgress
    from selfensemble.pipeline.paraphrase.one_question import write

    progress = ConsoleProgress(Console(stderr=True))  # stderr: --json keeps stdout to one object
    written = write(lambda: engine, model, [question], n_prompts, seed=seed, progress=progress)[0]
    return [question, *written.paraphrases], [written.note], written.record


@app.command()
@config_flags("engine_config", EngineConfig, only=("layout", "positions"))  # what the picture shows
def mask(
    question: str = typer.Argument(..., help="The original question."),
    paraphrase: list[str] = typer.Option([], "--paraphrase", "-p"),
    out: Path = typer.Option(Path("mask.png"), help="PNG to write."),
    few_shot: bool = typer.Option(False, help="Include the generic few-shot prefix (makes a big picture)."),
    model: str = typer.Option("smollm2-135m", help="Whose tokenizer to use. " + MODEL_HELP),
    engine_config: EngineConfig = None,  # built from its flags by config_flags
):
    """Draw the flex attention mask for QUESTION and its paraphrases."""
    from selfensemble.engine.attention.maskplot import layout_row, plot_mask
    from selfensemble.engine.models import load_tokenizer
    from selfensemble.engine.prompts import default_format

    layout, positions = engine_config.layout, engine_config.positions
    row = layout_row(load_tokenizer(model), [question, *paraphrase], default_format(few_shot), layout, positions)
    path = plot_mask(row, out, title=f"flex mask, layout={layout}, positions={positions}")
    typer.echo(f"wrote {path} ({len(row.tokens)} prompt tokens)")
