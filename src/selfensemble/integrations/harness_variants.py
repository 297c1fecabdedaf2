"""Prompt variants of an lm-evaluation-harness context: its own demonstrations re-rendered.

A harness context is already rendered text. To vary its format or the order of its demonstrations,
the context is read back as a PromptFormat (``harness_format``): task description, demonstrations
("<question label><question><line end><cue><space><answer><delimiter>", as split_context found the
test question's label, line end and cue) and the task's own surface. It is used only when rendering
it again gives the context's prefix character for character; otherwise the adapter counts the
context and asks it through its paraphrases only.

Variant 0 is the context as the harness wrote it; ``format`` j > 0 is FORMATS[j]; ``order`` permutes
the task's demonstrations; ``demos`` cannot be offered: the harness draws the demonstrations.
"""

from __future__ import annotations

import hashlib
import re

from selfensemble.data.base import Example
from selfensemble.engine.prompts import PromptFormat
from selfensemble.engine.variants import levels, render, sample_variants
from selfensemble.errors import ConfigError
from selfensemble.integrations.harness_prompt import ContextSplit

HARNESS_DIMENSIONS = ("paraphrase", "format", "order")


def check_harness_variants(dims: tuple[str, ...]) -> None:
    """Refuse ``demos``: the harness, not the adapter, draws a task's demonstrations."""
    if "demos" in dims:
        raise ConfigError("variants=demos is not available in lm-eval: the harness draws the demonstrations "
                          "(num_fewshot, its fewshot seed). Use paraphrase, format or order.")


def harness_format(split: ContextSplit) -> PromptFormat | None:
    """The context's prefix as a PromptFormat (description, demonstrations, the task's surface), or None
    when none renders back to the prefix exactly.

    Example: prefix "Question: Where is Rome?\\nAnswer: Italy\\n\\n" (label "Question: ", line end "\\n",
    cue "Answer:") → one Example(("Where is Rome?",), "Italy"), answer_template "Answer: {answer}\\n\\n".
    A demonstration with several question lines (several phrasings) becomes one Example with each.
    """
    line = re.escape(split.label) + r"([^\n]+?)" + re.escape(split.line_end)
    block = re.compile(f"(?P<qs>(?:{line})+)" + re.escape(split.cue) + r"(?P<space>[ \t]*)(?P<a>[^\n]*?)(?P<sep>\n+)")
    found = list(block.finditer(split.prefix))
    if not found or found[-1].end() != len(split.prefix):
        return None
    spaces, seps = {m["space"] for m in found}, {m["sep"] for m in found}
    if len(spaces) != 1 or len(seps) != 1:
        return None
    fmt = PromptFormat(instruction=split.prefix[:found[0].start()],
                       examples=tuple(Example(tuple(re.findall(line, m["qs"])), m["a"]) for m in found),
                       question_template=split.label + "{question}" + split.line_end,
                       answer_template=split.cue + spaces.pop() + "{answer}" + seps.pop(), cue=split.cue)
    return fmt if fmt.prefix_text() == split.prefix else None


def harness_variants(split: ContextSplit, base: PromptFormat, prompts: list[str], dims: tuple[str, ...], n: int,
                     n_levels: int, seed: int):
    """The context's N variants (engine.variants.render) over ``prompts`` (the question, then its
    paraphrases), drawn from (seed, the context); value 0 of every dimension is the context itself."""
    counts = levels(dims, n_levels, len(prompts), len(base.examples))
    key = hashlib.sha256((split.prefix + split.segment() + split.cue).encode()).hexdigest()[:16]
    return render(prompts, base, sample_variants(counts, n, seed, key))
