"""The report's charts: accuracy per method beside the single prompts' range, and a reliability diagram.

``report.png`` shows each run's accuracy as a point with its 95% interval on an axis fitted to the
data (methods differ by a few points, which a 0–1 axis hides), a dashed line at the baseline
(origin), the single prompts' min–max as a box with each prompt's accuracy and their mean, and a
title that states the finding: which methods differ from the baseline after Holm's adjustment (read
from the report's comparisons), or that none does. ``reliability.png`` draws one small panel per
method (5 bins, each point sized by its answers, the counts in a row along the bottom), so no curve
hides another and no label collides.

Each plot function returns what it drew as plain data (title, slots, limits, curves) so tests and
``report.json`` can check the chart without reading pixels.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from selfensemble.analysis.family import ALPHA

#: Below this many answers in a run its reliability curve is noise; the diagram then says so in the
#: title and every point carries its bin count.
MIN_RELIABLE_N = 100
#: The reliability diagram's bins: the report's 10 calibration bins merged in pairs (exactly the
#: 5-bin statistics), so a few hundred answers fill each bin with more than a handful.
PLOT_BINS = 5
BAR_COLOR, RANGE_COLOR, MEAN_COLOR, SIG_COLOR = "#4C72B0", "#DD8452", "#C44E52", "#2CA02C"
LEGEND_ORDER = ["accuracy (95% bootstrap CI)", "differs from origin after Holm (95% CI)", "origin accuracy",
                "each prompt alone: min–max", "one prompt alone", "mean over prompts"]
#: Bins with fewer answers are drawn hollow and left out of the line: one answer is 0 or 1, not a rate.
MIN_BIN_N = 5


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


def finding(comparisons: list[dict] | None, baseline: str = "origin", alpha: float = ALPHA) -> str:
    """One line saying which methods differ from ``baseline`` after Holm's adjustment (McNemar, paired).

    E.g. 'flex differs from origin after Holm: +0.025 (Holm p 0.010)', 'No method differs from
    origin after Holm (largest: flex +0.025, Holm p 0.083)', or what is shown when nothing was compared.
    """
    rows = [c for c in comparisons or [] if c.get("baseline") == baseline and c.get("diff_mean") is not None]
    if not rows:
        why = "no paired comparison in this report" if not comparisons else f"no {baseline} run to compare with"
        return f"Accuracy per method ({why})"

    def name(c: dict) -> str:
        return f"{c['method']} ({c['group']})" if c.get("group") else c["method"]

    def diff(c: dict) -> str:
        p = c.get("mcnemar_p_holm")
        return f"{c['diff_mean']:+.3f}, Holm p {p:.3f}" if p is not None else f"{c['diff_mean']:+.3f}"

    sig = [c for c in rows if c.get("mcnemar_p_holm") is not None and c["mcnemar_p_holm"] < alpha]
    if sig:
        verb = "differs" if len(sig) == 1 else "differ"
        return f"{'; '.join(f'{name(c)} ({diff(c)})' for c in sig)} {verb} from {baseline} after Holm"
    top = max(rows, key=lambda c: abs(c["diff_mean"]))
    return f"No method differs from {baseline} after Holm (largest difference: {name(top)} {diff(top)})"


def chart_slots(summary_rows: list[dict]) -> list[dict]:
    """One slot per run (point + CI), and one 'single prompts' slot per distinct per-prompt range.

    `per_prompt` and `vote` (derived from the same per-prompt answers) carry identical per-prompt
    accuracies: their range is drawn once, after the first run that has it, labelled by the runs
    sharing it. Slots: {"kind": "run"|"single_prompts", "label", "runs", "accuracy"|"values"}.
    """
    slots: list[dict] = []
    seen: dict[tuple, dict] = {}
    for r in summary_rows:
        name = str(r.get("name", r["method"]))
        slots.append({"kind": "run", "label": name, "runs": [name], "accuracy": r["accuracy"],
                      "ci": [r.get("ci_low"), r.get("ci_high")], "method": r.get("method"),
                      "group": [r.get("model"), r.get("dataset")]})
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


def fitted_limits(slots: list[dict], pad: float = 0.15, min_span: float = 0.05) -> tuple[float, float]:
    """Accuracy-axis limits that hold every interval and prompt value with a margin, inside [0, 1].

    Example: values .31–.32 with intervals .27–.36 → about (.256, .374), not (0, 1).
    """
    values: list[float] = []
    for s in slots:
        if s["kind"] == "run" and s["accuracy"] is not None:
            values += [v for v in (s["accuracy"], *s["ci"]) if v is not None]
        elif s["kind"] == "single_prompts":
            values += list(s["values"])
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    span = max(hi - lo, min_span)
    mid = (lo + hi) / 2
    lo, hi = mid - span / 2 - pad * span, mid + span / 2 + pad * span
    return max(0.0, lo), min(1.0, hi)


def summary_figure(summary_rows: list[dict], comparisons: list[dict] | None = None, baseline: str = "origin"):
    """(Figure, drawn): the accuracy chart and what it shows ({"title", "finding", "context", "slots", "ylim"})."""
    # Figure + Agg canvas rather than pyplot: no global backend switch, safe under any GUI/test setup.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    slots = chart_slots(summary_rows)
    sig = {(c["method"], c.get("model"), c.get("dataset")) for c in comparisons or [] if c.get("baseline") == baseline
           and c.get("mcnemar_p_holm") is not None and c["mcnemar_p_holm"] < ALPHA}
    diffs = {(c["method"], c.get("model"), c.get("dataset")): c["diff_mean"] for c in comparisons or []
             if c.get("baseline") == baseline and c.get("diff_mean") is not None}
    for s in slots:
        if s["kind"] == "run":  # a run's name is its comparison's method, "+ (model, dataset)" across groups
            keys = [(name, *s["group"]) for name in (s["label"], s["label"].rsplit(" (", 1)[0])]
            s["significant"] = any(k in sig for k in keys)
            s["vs_baseline"] = next((diffs[k] for k in keys if k in diffs), None)
    fig = Figure(figsize=(max(6.5, 1.0 * len(slots) + 3.5), 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ylim = fitted_limits(slots)
    _draw_slots(ax, slots)
    bases = [s for s in slots if s["kind"] == "run" and s.get("method") == baseline and s["accuracy"] is not None]
    if len(bases) == 1:  # one line only makes sense for one group
        base = bases[0]
        ax.axhline(base["accuracy"], ls="--", lw=1, color="grey", zorder=1, label=f"{baseline} accuracy")
    ax.set_xticks(range(len(slots)))
    rotate = len(slots) > 5
    ax.set_xticklabels([_tick(s, baseline) for s in slots], rotation=30 if rotate else 0,
                       ha="right" if rotate else "center", fontsize=8)
    ax.set_xlim(-0.6, len(slots) - 0.4)
    ax.set_ylim(*ylim)
    ax.set_ylabel("accuracy (axis fitted to the data)")
    ax.grid(axis="y", alpha=0.3)
    line, context = finding(comparisons, baseline), chart_title(summary_rows)
    ax.set_title(f"{line}\n{context}", fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: LEGEND_ORDER.index(labels[i]) if labels[i] in LEGEND_ORDER else 99)
    ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize=8, frameon=False)  # outside the data
    fig.tight_layout()
    return fig, {"title": f"{line}\n{context}", "finding": line, "context": context, "slots": slots,
                 "ylim": list(ylim), "significant": [s["label"] for s in slots if s.get("significant")]}


def _tick(slot: dict, baseline: str) -> str:
    """A run's name with its paired difference from the baseline ('flex\nΔ +0.025'), starred when Holm-significant."""
    if slot["kind"] != "run" or slot.get("vs_baseline") is None:
        return slot["label"]
    return f"{slot['label']}\nΔ {slot['vs_baseline']:+.3f}{' *' if slot.get('significant') else ''}"


def _draw_slots(ax, slots: list[dict]) -> None:
    """Runs as points with their interval (green where they differ from the baseline after Holm);
    single-prompt ranges as a box from min to max, each prompt a dot, the mean a diamond."""
    labelled: set[str] = set()

    def once(label: str) -> str | None:
        if label in labelled:
            return None
        labelled.add(label)
        return label

    for x, s in enumerate(slots):
        if s["kind"] == "run":
            acc = s["accuracy"]
            if acc is None:
                continue
            lo, hi = (v if v is not None else acc for v in s["ci"])
            hit = s.get("significant", False)
            label = "differs from origin after Holm (95% CI)" if hit else "accuracy (95% bootstrap CI)"
            ax.errorbar([x], [acc], yerr=[[acc - lo], [hi - acc]], fmt="o", ms=7, capsize=5, lw=1.6,
                        color=SIG_COLOR if hit else BAR_COLOR, zorder=3, label=once(label))
            ax.annotate(f"{acc:.3f}", (x, hi), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=7)
            continue
        lo, hi = s["range"]
        ax.bar(x, max(hi - lo, 1e-9), bottom=lo, width=0.5, color=RANGE_COLOR, alpha=0.35, edgecolor=RANGE_COLOR,
               lw=1.2, zorder=2, label=once("each prompt alone: min–max"))
        ax.scatter([x] * len(s["values"]), s["values"], s=14, color=RANGE_COLOR, zorder=3, label=once("one prompt alone"))
        ax.scatter([x], [s["mean"]], marker="D", s=40, color=MEAN_COLOR, zorder=4, label=once("mean over prompts"))


def plot_summary(summary_rows: list[dict], out_png: Path, comparisons: list[dict] | None = None,
                 baseline: str = "origin") -> dict:
    """Write the accuracy chart; returns what it shows ({"title", "finding", "slots", "ylim", …})."""
    fig, drawn = summary_figure(summary_rows, comparisons, baseline)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    return drawn


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


def coarse_bins(bins: list[dict], n_bins: int = PLOT_BINS) -> list[dict]:
    """Merge the report's equal-width bins (report.reliability_bins: "lo", "hi", "n", "confidence",
    "accuracy") into ``n_bins`` equal-width bins, weighting by count: the same numbers binning into
    ``n_bins`` would give. Example: (.0,.1] n 2 acc 1 + (.1,.2] n 2 acc 0 → (.0,.2] n 4 acc .5."""
    merged: dict[int, list[dict]] = {}
    for b in bins:
        mid = (b["lo"] + b["hi"]) / 2 if "lo" in b and "hi" in b else b["confidence"]
        merged.setdefault(min(int(mid * n_bins), n_bins - 1), []).append(b)
    out = []
    for k in sorted(merged):
        group = merged[k]
        n = sum(b["n"] for b in group)
        out.append({"lo": k / n_bins, "hi": (k + 1) / n_bins, "n": n,
                    "confidence": sum(b["n"] * b["confidence"] for b in group) / n,
                    "accuracy": sum(b["n"] * b["accuracy"] for b in group) / n})
    return out


def reliability_figure(rows: list[dict]):
    """(Figure, drawn): one panel per curve, ``PLOT_BINS`` bins, points sized by their answers, the
    counts in a row along each panel's bottom; the first curve (the baseline) drawn faintly in the others."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = reliability_curves(rows)
    for c in curves:
        c["plot_bins"] = coarse_bins(c["bins"])
    cols = min(3, max(1, len(curves)))
    nrows = max(1, math.ceil(len(curves) / cols))
    fig = Figure(figsize=(3.3 * cols, 3.2 * nrows + 0.7))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, cols, squeeze=False, sharex=True, sharey=True)
    biggest = max((b["n"] for c in curves for b in c["plot_bins"]), default=1)
    for i, c in enumerate(curves):
        _reliability_panel(axes[i // cols][i % cols], c, curves[0] if i else None, biggest)
    for j in range(len(curves), nrows * cols):
        axes[j // cols][j % cols].set_visible(False)
    n_max = max((c["n"] for c in curves), default=0)
    title = (f"Reliability: accuracy against the fused answer probability ({PLOT_BINS} bins; numbers along "
             f"the bottom: answers per bin; hollow: fewer than {MIN_BIN_N})")
    if n_max < MIN_RELIABLE_N:
        title += f"\nonly {n_max} answers per method: bins this small are noise"
    fig.suptitle(title, fontsize=9)
    fig.supxlabel("fused answer probability (bin mean)", fontsize=8)
    fig.supylabel("accuracy in bin", fontsize=8)
    fig.tight_layout()
    return fig, {"title": title, "curves": curves, "bins": PLOT_BINS, "panels": len(curves)}


def _reliability_panel(ax, curve: dict, reference: dict | None, biggest: int) -> None:
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    if reference is not None:
        rb = [b for b in reference["plot_bins"] if b["n"] >= MIN_BIN_N]
        ax.plot([b["confidence"] for b in rb], [b["accuracy"] for b in rb], color="grey", alpha=0.45, lw=1,
                label=" = ".join(reference["names"]))
    bins = curve["plot_bins"]
    full = [b for b in bins if b["n"] >= MIN_BIN_N]
    ax.plot([b["confidence"] for b in full], [b["accuracy"] for b in full], color=BAR_COLOR, lw=1.3)
    for b in bins:
        ax.scatter([b["confidence"]], [b["accuracy"]], s=12 + 110 * b["n"] / biggest, zorder=3,
                   color=BAR_COLOR if b["n"] >= MIN_BIN_N else "none", edgecolors=BAR_COLOR)
    for b in bins:  # one count per bin, at the bin's centre on a fixed row: never two labels in one place
        ax.text((b["lo"] + b["hi"]) / 2, 0.02, str(b["n"]), ha="center", va="bottom", fontsize=7, color="#333333")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"{' = '.join(curve['names'])}  ·  ECE {curve['ece']:.3f}  ·  n={curve['n']}", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25)
    if reference is not None:
        ax.legend(fontsize=6, loc="upper left", frameon=False)


def plot_reliability(rows: list[dict], out_png: Path) -> dict:
    """Write the reliability diagram (report.calibration's rows); returns {"title", "curves", "bins", "panels"}."""
    fig, drawn = reliability_figure(rows)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    return drawn
