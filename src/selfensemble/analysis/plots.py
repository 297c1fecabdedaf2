"""The report's charts: accuracy per method beside the single prompts' range, and a reliability diagram.

Each plot function returns what it drew as plain data (title, slots, ranges, points) so tests and
`report.json` can check the chart without reading pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Below this many answers in a run its reliability curve is noise; the diagram then says so in the
#: title and every point carries its bin count.
MIN_RELIABLE_N = 100


def chart_title(summary_rows: list[dict]) -> str:
    """'model · dataset · n=… · N=…' per (model, dataset) group, e.g. 'smollm2-135m · pararel · n=40 · N=5'."""
    parts: dict[tuple, set] = {}
    for r in summary_rows:
        key = (r.get("model"), r.get("dataset"))
        parts.setdefault(key, set()).add((r.get("n"), r.get("num_paraphrases")))
    titles = []
    for (model, dataset), sizes in parts.items():
        ns = "/".join(str(n) for n in sorted({n for n, _ in sizes if n is not None})) or "?"
        bigs = "/".join(str(k) for k in sorted({k for _, k in sizes if k is not None})) or "?"
        titles.append(f"{model} · {dataset} · n={ns} · N={bigs}")
    return " | ".join(titles) if len(titles) <= 2 else f"{len(titles)} model/dataset groups"


def chart_slots(summary_rows: list[dict]) -> list[dict]:
    """One slot per run (bar + CI), and one 'single prompts' slot per distinct per-prompt range.

    `per_prompt` and `vote` (derived from the same per-prompt answers) carry identical per-prompt
    accuracies: their range is drawn once, after the first run that has it, labelled by the runs
    sharing it. Slots: {"kind": "run"|"single_prompts", "label", "runs", "accuracy"|"values"}.
    """
    slots: list[dict] = []
    seen: dict[tuple, dict] = {}
    for r in summary_rows:
        name = str(r.get("name", r["method"]))
        slots.append({"kind": "run", "label": name, "runs": [name], "accuracy": r["accuracy"],
                      "ci": [r.get("ci_low"), r.get("ci_high")]})
        pp = [p for p in (r.get("per_prompt_accuracy") or []) if p is not None]
        if not pp:
            continue
        key = (r.get("model"), r.get("dataset"), r.get("n"), tuple(round(p, 9) for p in pp))
        if key in seen:
            seen[key]["runs"].append(name)
            continue
        seen[key] = {"kind": "single_prompts", "runs": [name], "values": pp,
                     "range": [min(pp), max(pp)], "mean": float(np.mean(pp))}
        slots.append(seen[key])
    for s in slots:
        if s["kind"] == "single_prompts":
            s["label"] = f"each prompt alone\n({', '.join(s['runs'])})"
    return slots


def plot_summary(summary_rows: list[dict], out_png: Path) -> dict:
    """Bar chart of accuracy per run with the single prompts' spread; returns {"title", "slots"}."""
    # Figure + Agg canvas rather than pyplot: no global backend switch, safe under any GUI/test setup.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    slots = chart_slots(summary_rows)
    fig = Figure(figsize=(max(5.5, 1.0 * len(slots) + 2.5), 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    bar_label = spread_label = True
    for x, s in enumerate(slots):
        if s["kind"] == "run":
            acc = s["accuracy"]
            if acc is None:
                continue
            lo, hi = (v if v is not None else acc for v in s["ci"])
            ax.bar(x, acc, width=0.6, yerr=[[acc - lo], [hi - acc]], capsize=4, color="#4C72B0", alpha=0.85,
                   label="accuracy (95% bootstrap CI)" if bar_label else None)
            bar_label = False
            continue
        pp = s["values"]
        ax.vlines(x, *s["range"], color="#DD8452", lw=3, label="each prompt alone: min–max" if spread_label else None)
        ax.scatter([x] * len(pp), pp, s=14, color="#DD8452", alpha=0.7, zorder=3)
        ax.scatter([x], [s["mean"]], marker="D", s=45, color="#C44E52", zorder=4,
                   label="each prompt alone: mean" if spread_label else None)
        spread_label = False
    ax.set_xticks(range(len(slots)))
    rotate = len(slots) > 5
    ax.set_xticklabels([s["label"] for s in slots], rotation=30 if rotate else 0,
                       ha="right" if rotate else "center", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.grid(axis="y", alpha=0.3)
    title = chart_title(summary_rows)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)  # outside the data
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    return {"title": title, "slots": slots}


#: Two runs' bins are one curve when counts and accuracies match and mean probabilities differ by less.
SAME_CURVE_TOL = 1e-4


def _same_bins(a: list[dict], b: list[dict]) -> bool:
    # per_prompt scores the original prompt inside a batch of N rows, origin alone: their
    # probabilities agree to ~1e-6, not bit for bit.
    return len(a) == len(b) and all(
        x["n"] == y["n"] and x["accuracy"] == y["accuracy"] and abs(x["confidence"] - y["confidence"]) < SAME_CURVE_TOL
        for x, y in zip(a, b, strict=True))


def reliability_curves(rows: list[dict]) -> list[dict]:
    """Runs with the same bins (``origin`` and ``per_prompt`` answer the original alike) merged into one
    curve named by all of them, so no curve hides under another."""
    curves: list[dict] = []
    for r in rows:
        same = next((c for c in curves if _same_bins(c["bins"], r["bins"])), None)
        if same is not None:
            same["names"].append(r["name"])
            continue
        curves.append({"names": [r["name"]], "bins": r["bins"], "n": r["n"], "ece": r["ece"]})
    return curves


def plot_reliability(rows: list[dict], out_png: Path) -> dict:
    """Reliability diagram: per run, accuracy against the mean fused probability of each bin
    (report.calibration), each point labelled with its bin count; returns {"title", "curves"}."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = reliability_curves(rows)
    fig = Figure(figsize=(7.5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    for c in curves:
        xs, ys = [b["confidence"] for b in c["bins"]], [b["accuracy"] for b in c["bins"]]
        line = ax.plot(xs, ys, marker="o", ms=4, lw=1.2, label=f"{' = '.join(c['names'])} (ECE {c['ece']:.3f})")[0]
        for x, y, b in zip(xs, ys, c["bins"], strict=True):
            ax.annotate(str(b["n"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=6,
                        color=line.get_color())
    n_max = max((c["n"] for c in curves), default=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("fused answer probability (bin mean)")
    ax.set_ylabel("accuracy in bin")
    title = "reliability diagram (numbers: answers per bin)"
    if n_max < MIN_RELIABLE_N:
        title += f"\nonly {n_max} answers per method: bins this small are noise"
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # outside the data
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    return {"title": title, "curves": curves}
