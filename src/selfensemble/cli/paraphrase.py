"""`check-paraphrases`: would the paraphrase gate keep these paraphrases, and why not?"""

from __future__ import annotations

import json

import typer

from selfensemble.cli.common import MIN_SIMILARITY_HELP, app


@app.command("check-paraphrases")
def check_paraphrases(
    question: str = typer.Argument(..., help="The original question."),
    paraphrase: list[str] = typer.Option(..., "--paraphrase", "-p", help="A paraphrase to check (repeatable)."),
    min_similarity: float = typer.Option(None, help=MIN_SIMILARITY_HELP),
    embedder: str = typer.Option("wordllama", help="wordllama (default, 16 MB, no torch) | minilm (extra gate-minilm)"),
    entity_guard: bool = typer.Option(False, help="Also reject paraphrases that change or drop a name or number."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of {paraphrase, similarity, kept, reason}."),
):
    """Score each paraphrase against QUESTION with the gate `run` applies to generated paraphrases."""
    from selfensemble.config.gate import GateConfig
    from selfensemble.pipeline.paraphrase.gate import check

    gate = GateConfig(min_similarity=min_similarity, embedder=embedder, entity_guard=entity_guard)
    verdicts = check(question, paraphrase, gate)
    if as_json:
        typer.echo(json.dumps([v.to_dict() for v in verdicts], ensure_ascii=False))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"gate: {gate.embedder} similarity ≥ {gate.min_similarity}"
                        + (", entity guard" if gate.entity_guard else ""))
    for h in ("paraphrase", "similarity", "kept", "why not"):
        table.add_column(h, justify="right" if h == "similarity" else "left")
    for v in verdicts:
        table.add_row(escape(v.paraphrase), f"{v.similarity:.3f}", "yes" if v.kept else "[red]no[/]",
                      escape(v.reason or ""))
    Console().print(table)
