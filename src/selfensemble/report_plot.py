"""The report's bar chart: accuracy with 95% intervals per run, and each prompt asked alone beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_summary(summary_rows: list[dict], out_png: Path) -> None:
    # Figure + Agg canvas rather than pyplot: no global backend switch, safe under any GUI/test setup.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # One slot per run (bar + CI); a run with per-prompt answers gets a second slot right after it
    # showing each prompt asked alone (dots), their min–max range and mean, so the fused methods
    # can be read against the best and worst single paraphrase, not only the original question.
    slots: list[tuple[str, dict, bool]] = []
    for r in summary_rows:
        name = str(r.get("name", r["method"]))
        slots.append((name, r, False))
        if any(p is not None for p in (r.get("per_prompt_accuracy") or [])):
            slots.append((f"{name}\nsingle prompts", r, True))
    fig = Figure(figsize=(max(4.5, 1.0 * len(slots) + 2), 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    bar_label = spread_label = True
    for x, (_, r, spread) in enumerate(slots):
        if not spread:
            acc = r["accuracy"]
            if acc is None:
                continue
            err = [[acc - (r["ci_low"] if r["ci_low"] is not None else acc)],
                   [(r["ci_high"] if r["ci_high"] is not None else acc) - acc]]
            ax.bar(x, acc, width=0.6, yerr=err, capsize=4, color="#4C72B0", alpha=0.85,
                   label="accuracy (95% bootstrap CI)" if bar_label else None)
            bar_label = False
            continue
        pp = [p for p in r["per_prompt_accuracy"] if p is not None]
        ax.vlines(x, min(pp), max(pp), color="#DD8452", lw=3,
                  label="single prompts: min–max" if spread_label else None)
        ax.scatter([x] * len(pp), pp, s=14, color="#DD8452", alpha=0.7, zorder=3)
        ax.scatter([x], [float(np.mean(pp))], marker="D", s=45, color="#C44E52", zorder=4,
                   label="single prompts: mean" if spread_label else None)
        spread_label = False
    ax.set_xticks(range(len(slots)))
    rotate = len(slots) > 5
    ax.set_xticklabels([s[0] for s in slots], rotation=30 if rotate else 0, ha="right" if rotate else "center",
                       fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.grid(axis="y", alpha=0.3)
    titles = sorted({f"{r.get('model')} · {r.get('dataset')}" for r in summary_rows if r.get("model")})
    ax.set_title(" | ".join(titles) if 0 < len(titles) <= 2 else "accuracy by method", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18 if not rotate else -0.3), ncol=3, fontsize=8,
              frameon=False)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)


def plot_reliability(rows: list[dict], out_png: Path) -> None:
    """Reliability diagram: per run, accuracy against the mean fused probability of each bin (report.calibration)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for r in rows:
        xs, ys = [b["confidence"] for b in r["bins"]], [b["accuracy"] for b in r["bins"]]
        sizes = [12 + 60 * b["n"] / r["n"] for b in r["bins"]]
        line = ax.plot(xs, ys, marker=None, lw=1.2, label=f"{r['name']} (ECE {r['ece']:.3f})")[0]
        ax.scatter(xs, ys, s=sizes, color=line.get_color(), zorder=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("fused answer probability (bin mean)")
    ax.set_ylabel("accuracy in bin")
    ax.set_title("reliability diagram (marker size: share of questions)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
