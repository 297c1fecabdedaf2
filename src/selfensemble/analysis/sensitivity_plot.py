"""The per-dimension sensitivity figure (``sensitivity.png`` beside the report chart).

One row of panels per (model, dataset), one panel per variant dimension: accuracy of each value of
the dimension (bars: 95% bootstrap interval over items) and, as diamonds, the same with the other
dimensions held fixed (analysis/variants.py). Returns what it drew as data, like analysis/plots.py.
"""

from __future__ import annotations

from pathlib import Path


def sensitivity_panels(entries: list[dict]) -> list[dict]:
    """One panel per (entry, dimension) with a ``by_dimension`` block: title, values, accuracies,
    intervals, held-fixed accuracies and the spread."""
    panels = []
    for row, e in enumerate(x for x in entries if x.get("by_dimension")):
        for d, block in e["by_dimension"].items():
            acc = [block["accuracy"][str(v)] for v in block["values"]]
            panels.append({"row": row, "title": f"{e.get('model')} · {e.get('dataset')} · {d}", "dimension": d,
                           "values": list(block["values"]), "accuracy": [a["accuracy"] for a in acc],
                           "ci": [[a["ci_low"], a["ci_high"]] for a in acc],
                           "held_fixed": [block["held_fixed"][str(v)] for v in block["values"]],
                           "spread": block["spread"], "n_items": block["n_items"]})
    return panels


def plot_sensitivity(entries: list[dict], out_png: Path) -> dict:
    """Draw the panels (see the module docstring); returns {"panels": [...]}."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = sensitivity_panels(entries)
    rows = max((p["row"] for p in panels), default=0) + 1
    cols = max((sum(1 for p in panels if p["row"] == r) for r in range(rows)), default=1)
    fig = Figure(figsize=(3.4 * cols + 0.6, 3.0 * rows + 0.4))
    FigureCanvasAgg(fig)
    col_of: dict[int, int] = {}
    for p in panels:
        col = col_of[p["row"]] = col_of.get(p["row"], -1) + 1
        ax = fig.add_subplot(rows, cols, p["row"] * cols + col + 1)
        xs = list(range(len(p["values"])))
        lows = [a - (lo if lo is not None else a) for a, (lo, _) in zip(p["accuracy"], p["ci"], strict=True)]
        highs = [(hi if hi is not None else a) - a for a, (_, hi) in zip(p["accuracy"], p["ci"], strict=True)]
        ax.bar(xs, p["accuracy"], yerr=[lows, highs], capsize=3, color="#4C72B0", alpha=0.85,
               label="accuracy (95% CI)")
        ax.scatter(xs, p["held_fixed"], marker="D", s=22, color="#C44E52", zorder=3, label="others held fixed")
        ax.set_xticks(xs)
        ax.set_xticklabels([str(v) for v in p["values"]], fontsize=8)
        ax.set_xlabel(f"{p['dimension']} value", fontsize=8)
        # held-fixed values come from a linear model: on few items they can leave [0, 1]; show them anyway
        ax.set_ylim(min(0.0, *p["held_fixed"]) - 0.02, max(1.05, *p["held_fixed"]))
        spread = "n/a" if p["spread"] is None else f"{p['spread']:.3f}"
        ax.set_title(f"{p['title']}\nspread {spread}, n={p['n_items']}", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        if col == 0:
            ax.set_ylabel("accuracy")
            ax.legend(fontsize=6, loc="upper left", frameon=False)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    return {"panels": panels}
