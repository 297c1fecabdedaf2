"""A picture of the attention mask for a set of prompts, segments labelled (for debugging layouts)."""

from __future__ import annotations

from pathlib import Path

import torch

from selfensemble.engine.attention.masks import dense_mask
from selfensemble.engine.packing import CUE, SHARED, PackedBatch, Row
from selfensemble.engine.prompts import PromptFormat, build_parts


def layout_row(tokenizer, prompts: list[str], fmt: PromptFormat, layout: str | None = None,
               positions: str | None = None) -> Row:
    """The packed flex row the engine runs, with the shared prefix inside the row so the picture shows it.

    The row comes from ``methods.plan_rows`` (prefix not cached), the same function the engine
    uses, so the picture cannot drift from what runs. ``layout`` / ``positions`` left None are the
    engine's defaults (defaults.py).
    """
    from selfensemble.config.engine import EngineConfig
    from selfensemble.engine.rows import plan_rows

    parts = build_parts(tokenizer, fmt, prompts)
    given = {k: v for k, v in (("layout", layout), ("positions", positions)) if v is not None}
    cfg = EngineConfig(attention="sdpa", **given)
    return plan_rows("flex", parts, None, cfg, cached_prefix=False).rows[0]


def _label(seg: int) -> str:
    return {SHARED: "prefix", CUE: "cue"}.get(seg, f"p{seg}")


def _spans(segments: list[int]) -> list[tuple[int, int, int]]:
    """(start, end, segment id) runs: [1, 1, 2, -1] → [(0, 2, 1), (2, 3, 2), (3, 4, -1)]."""
    spans, start = [], 0
    for i in range(1, len(segments) + 1):
        if i == len(segments) or segments[i] != segments[start]:
            spans.append((start, i, segments[start]))
            start = i
    return spans


def plot_mask(row: Row, out: Path, generated: int = 3, title: str = "") -> Path:
    """Heatmap of who attends to whom: rows = queries, columns = keys; ``generated`` answer tokens appended."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    full = Row(row.tokens + [0] * generated, row.segments + [CUE] * generated,
               row.positions + list(range(row.next_position, row.next_position + generated)))
    batch = PackedBatch.from_rows([full])
    mask = dense_mask(batch)[0, 0].to(torch.float32).numpy()
    n = len(full.tokens)
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(mask, cmap="Blues", interpolation="nearest", vmin=0, vmax=1.2)
    ticks, labels = [], []
    for start, end, seg in _spans(row.segments):
        ax.axhline(start - 0.5, color="grey", lw=0.5)
        ax.axvline(start - 0.5, color="grey", lw=0.5)
        ticks.append((start + end - 1) / 2)
        labels.append(f"{_label(seg)}\n({end - start} tok)")
    ax.axhline(len(row.tokens) - 0.5, color="red", lw=0.8)
    ax.axvline(len(row.tokens) - 0.5, color="red", lw=0.8)
    ticks.append(len(row.tokens) + (generated - 1) / 2)
    labels.append("answer")
    ax.set_xticks(ticks, labels, fontsize=7)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    ax.set_title(title or f"attention mask: {n} tokens, {len(set(s for s in row.segments if s > 0))} paraphrases")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
