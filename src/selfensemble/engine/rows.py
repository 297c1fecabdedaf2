"""How one query becomes token rows under a method (its ``Method.rows`` plan), and how they group.

The one source for the engine, the slow reference decoder, the benchmark and the mask picture
(maskplot), so none can drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfensemble.engine.packing import Row, pack_row
from selfensemble.engine.prompts import PromptParts
from selfensemble.methods.registry import Method, Rows, get_method, heaviest


@dataclass
class RowPlan:
    """The rows one query becomes under one method, and how they group into answers.

    ``rows`` are packed token rows (packing.Row); ``groups`` lists row indices (local to this
    query), one group per answer decoded; ``weights`` holds one (N,) tensor or None per group.
    Example, 3 prompts: per_prompt → 3 rows, groups [[0], [1], [2]]; avg → 3 rows, groups
    [[0, 1, 2]]; flex → 1 row holding all 3 segments and the shared cue, groups [[0]]; select with
    weights [.2, .5, .3] → 1 row, prompt 1 alone, groups [[0]].
    """

    rows: list[Row]
    groups: list[list[int]]
    weights: list[torch.Tensor | None]


def plan_rows(method: str | Method, parts: PromptParts, weights: torch.Tensor | None, cfg,
              cached_prefix: bool) -> RowPlan:
    """The row layout the engine runs for ``method`` (a name or a Method), by its ``rows`` plan.

    ``cached_prefix``: the shared instruction + few-shot prefix lives in a reused KV cache, so the
    rows hold only what follows it (positions start at len(prefix)); else it is inside every row.
    A packed plan (flex) uses ``cfg.layout`` ("shared": one prefix before all paraphrases; "full":
    the prefix once per paraphrase) and ``cfg.positions`` (``cfg``: an EngineConfig); other plans
    ignore both. A row of one prompt ends in that prompt's own cue (``parts.cue_of``); a packed row
    in the one shared cue after all segments (``parts.cue``).
    """
    spec = get_method(method)
    shared, start = ([], len(parts.prefix)) if cached_prefix else (parts.prefix, 0)
    n = len(parts.segments)
    if spec.rows in (Rows.ALONE, Rows.CHOSEN):
        k = 0 if spec.rows is Rows.ALONE else heaviest(_values(weights))
        return RowPlan([pack_row(shared, [parts.segments[k]], parts.cue, start)], [[0]], [None])
    if spec.rows is Rows.PACKED:
        if cfg.layout == "full" and cached_prefix:  # one cached copy of the prefix per paraphrase
            row = pack_row([], parts.segments, parts.cue, start, cfg.positions)
        elif cfg.layout == "full":
            row = pack_row([], [parts.prefix + s for s in parts.segments], parts.cue, 0, cfg.positions)
        else:
            row = pack_row(shared, parts.segments, parts.cue, start, cfg.positions)
        return RowPlan([row], [[0]], [None])
    rows = [pack_row(shared, [s], parts.cue_of(i), start) for i, s in enumerate(parts.segments)]
    if spec.per_prompt:
        return RowPlan(rows, [[i] for i in range(n)], [None] * n)
    return RowPlan(rows, [list(range(n))], [weights])


def _values(weights) -> list[float] | None:
    """A query's weights as plain numbers (a CheckedWeights, a tensor or a list), None for none."""
    if weights is None:
        return None
    tensor = getattr(weights, "tensor", weights)
    return [float(w) for w in (tensor.tolist() if hasattr(tensor, "tolist") else tensor)]
