"""One chunk of queries laid out for the model: the rows, groups and attention-fusion terms that
decoding (engine.Engine.answer_parts) and scoring (loglik) both run, built by ``Engine.prepare``.

Kept apart from engine.py so the layout arithmetic reads on its own: rows come from each query's
``RowPlan`` (rows.plan_rows), query after query; groups index into them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from selfensemble.engine.attention.masks import AttentionFusion
from selfensemble.engine.packing import PackedBatch, Row
from selfensemble.engine.prompts import PromptParts
from selfensemble.errors import SelfEnsembleError
from selfensemble.methods.registry import get_method


@dataclass
class Prepared:
    """One chunk ready for the model.

    ``rows``: every query's rows (``plans[q].rows``), query after query; ``groups``: indices into
    ``rows``, one list per answer group, with ``group_weights`` and ``owner`` (the chunk-local
    query) per group; ``fused_n``: per row, the paraphrases packed in it (1 unless flex);
    ``batch``: the padded rows (B, L); ``cache``: KV with the cached prefix in place and room for
    the new tokens; ``terms``: attention fusion's per-row (scale, bias) on the device, None when
    inactive; ``prefix_tokens``: prefix tokens held in the cache; ``started``: perf_counter() when
    preparing began (answers' seconds include it: encoding a new prefix is part of the cost).
    """

    parts: list[PromptParts]
    plans: list  # rows.RowPlan per query
    rows: list[Row]
    groups: list[list[int]]
    group_weights: list
    owner: list[int]
    fused_n: list[int]
    batch: PackedBatch
    cache: object
    terms: tuple[torch.Tensor, torch.Tensor] | None
    prefix_tokens: int
    started: float


def lay_out(method: str, parts: Sequence[PromptParts], plans: Sequence) -> tuple[list, list, list, list, list]:
    """(rows, groups, group_weights, owner, fused_n) of a chunk from its queries' row plans.

    Example, avg with 2 queries of 3 prompts: rows 0-5, groups [[0, 1, 2], [3, 4, 5]], owner [0, 1],
    fused_n [1] * 6; flex: rows 0-1 (one packed row each), groups [[0], [1]], fused_n [3, 3].
    """
    packed = get_method(method).packs_prompts
    rows, groups, group_weights, owner, fused_n = [], [], [], [], []
    for q, (plan, p) in enumerate(zip(plans, parts, strict=True)):
        groups += [[len(rows) + r for r in g] for g in plan.groups]
        rows += plan.rows
        group_weights += plan.weights
        owner += [q] * len(plan.groups)
        # attention-fusion knobs see a row's N only on packed (flex) rows; every other row is N = 1 (untouched)
        fused_n += [len(p.segments) if packed else 1] * len(plan.rows)
    return rows, groups, group_weights, owner, fused_n


def fusion_terms(knobs: AttentionFusion, fused_n: Sequence[int], device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-row (scale, bias) of attention fusion, or None when no row is fused or the knobs are off."""
    if not knobs.active or max(fused_n) <= 1:
        return None
    return tuple(t.to(device) for t in knobs.row_terms(torch.tensor(list(fused_n))))  # type: ignore[return-value]


def check_context(plans: Sequence, new_tokens: Sequence[int], limit: int, hint: str = ".") -> None:
    """Refuse a query whose prompt plus its new tokens would pass the model's context (positions, not KV slots)."""
    for plan, extra in zip(plans, new_tokens, strict=True):
        need = max(r.next_position for r in plan.rows) + extra
        if need > limit:
            raise SelfEnsembleError(f"Prompt too long for the model's context: {need} tokens (prompt + {extra} new) "
                                    f"> {limit}. Use fewer/shorter paraphrases or few-shot examples{hint}")
