"""The report's charts, checked on the data they return (title, slots, curves), not on pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from selfensemble.analysis.plots import (
    chart_slots,
    chart_title,
    coarse_bins,
    fitted_limits,
    plot_reliability,
    plot_summary,
    reliability_figure,
    summary_figure,
)


def row(method: str, pp: list[float] | None, n: int = 40, acc: float = 0.5) -> dict:
    return {"name": method, "method": method, "model": "smollm2-135m", "dataset": "pararel", "n": n,
            "num_paraphrases": 5, "accuracy": acc, "ci_low": acc - 0.1, "ci_high": acc + 0.1,
            "per_prompt_accuracy": pp}


def test_title_names_model_dataset_n_and_big_n() -> None:
    assert chart_title([row("origin", None), row("avg", None)]) == "smollm2-135m · pararel · n=40 · N=5"


def test_a_shared_per_prompt_range_is_drawn_once(tmp_path: Path) -> None:
    same = [0.3, 0.5, 0.4]
    rows = [row("origin", None), row("per_prompt", same), row("vote", list(same)), row("avg", None)]
    drawn = plot_summary(rows, tmp_path / "r.png")
    ranges = [s for s in drawn["slots"] if s["kind"] == "single_prompts"]
    assert len(ranges) == 1 and ranges[0]["runs"] == ["per_prompt", "vote"] and ranges[0]["range"] == [0.3, 0.5]
    assert [s["label"] for s in drawn["slots"] if s["kind"] == "run"] == ["origin", "per_prompt", "vote", "avg"]
    assert drawn["context"] == "smollm2-135m · pararel · n=40 · N=5" and drawn["title"].endswith(drawn["context"])
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_different_per_prompt_ranges_are_both_drawn() -> None:
    slots = chart_slots([row("per_prompt", [0.3, 0.5]), row("per_prompt", [0.2, 0.6], n=30)])
    assert [s["range"] for s in slots if s["kind"] == "single_prompts"] == [[0.3, 0.5], [0.2, 0.6]]


def test_reliability_merges_identical_curves_and_warns_on_small_n(tmp_path: Path) -> None:
    bins = [{"n": 3, "confidence": 0.2, "accuracy": 0.0}, {"n": 13, "confidence": 0.8, "accuracy": 0.7}]
    rows = [{"name": "origin", "n": 16, "bins": bins, "ece": 0.1},
            {"name": "per_prompt", "n": 16, "bins": [dict(b, confidence=b["confidence"] + 2e-6) for b in bins],
             "ece": 0.1},
            {"name": "avg", "n": 16, "bins": bins[:1], "ece": 0.2}]
    drawn = plot_reliability(rows, tmp_path / "rel.png")
    assert [c["names"] for c in drawn["curves"]] == [["origin", "per_prompt"], ["avg"]]
    assert "only 16 answers" in drawn["title"]


# -- figures that tell the story ---------------------------------------------------------------


def close_rows() -> list[dict]:
    """Accuracies of .31–.32 with their intervals, and single prompts between .305 and .318."""
    rows = [row("origin", None, n=400, acc=0.31), row("per_prompt", [0.305, 0.31, 0.318], n=400, acc=0.31),
            row("avg", None, n=400, acc=0.315), row("flex", None, n=400, acc=0.32)]
    for r in rows:
        r["ci_low"], r["ci_high"] = r["accuracy"] - 0.045, r["accuracy"] + 0.045
    return rows


def comparison(method: str, diff: float, p_holm: float) -> dict:
    return {"method": method, "baseline": "origin", "diff_mean": diff, "p_holm": p_holm,
            "model": "smollm2-135m", "dataset": "pararel"}


def test_the_axis_brackets_the_data_and_is_fitted_to_it():
    rows = close_rows()
    fig, drawn = summary_figure(rows, [])
    lo, hi = fig.axes[0].get_ylim()
    values = [v for r in rows for v in (r["ci_low"], r["ci_high"], *(r["per_prompt_accuracy"] or []))]
    assert lo <= min(values) and hi >= max(values) and [lo, hi] == drawn["ylim"]
    assert hi - lo < 0.3  # not 0–1: a few points of difference stay visible
    assert fitted_limits([{"kind": "run", "accuracy": 0.99, "ci": [0.97, 1.0]}])[1] == 1.0  # never past 1


@pytest.mark.parametrize(("comparisons", "named", "says"), [
    ([comparison("avg", 0.005, 0.9), comparison("flex", 0.04, 0.01)], ["flex"], "differs from origin after Holm"),
    ([comparison("avg", 0.05, 0.02), comparison("flex", 0.04, 0.01)], ["avg", "flex"], "differ from origin after Holm"),
    ([comparison("avg", 0.005, 0.9), comparison("flex", 0.02, 0.08)], ["flex"], "No method differs from origin"),
    ([], [], "no paired comparison"),
])
def test_the_title_states_the_finding(comparisons, named, says):
    _, drawn = summary_figure(close_rows(), comparisons)
    assert says in drawn["finding"] and drawn["title"].startswith(drawn["finding"])
    assert all(m in drawn["finding"] for m in named)
    assert "avg" not in drawn["finding"] or "avg" in named
    assert drawn["significant"] == [m for m in named if "No method" not in says]


def test_every_legend_entry_has_a_visible_mark_on_the_chart():
    """Each legend label names an artist drawn on the axes, visible and at least a few pixels tall
    (the single prompts' min–max once drew as a 2-pixel line hidden under its mean)."""
    from matplotlib.container import Container

    fig, _ = summary_figure(close_rows(), [comparison("flex", 0.04, 0.01)])
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "each prompt alone: min–max" in labels and len(labels) >= 5
    artists = [*ax.collections, *ax.lines, *ax.containers]
    for label in labels:
        found = [a for a in artists if a.get_label() == label]
        assert found, f"legend entry {label!r} has no artist on the chart"
        for a in found:
            parts = [c for c in a.get_children() if c is not None] if isinstance(a, Container) else [a]
            assert all(p.get_visible() and (p.get_alpha() is None or p.get_alpha() > 0) for p in parts)
            if label == "each prompt alone: min–max":
                assert all(p.get_window_extent(renderer).height >= 5 for p in parts)


def test_coarse_bins_merge_pairs_by_count():
    bins = [{"lo": 0.0, "hi": 0.1, "n": 2, "confidence": 0.05, "accuracy": 1.0},
            {"lo": 0.1, "hi": 0.2, "n": 2, "confidence": 0.15, "accuracy": 0.0},
            {"lo": 0.9, "hi": 1.0, "n": 1, "confidence": 0.95, "accuracy": 1.0}]
    assert coarse_bins(bins) == [
        {"lo": 0.0, "hi": 0.2, "n": 4, "confidence": pytest.approx(0.1), "accuracy": 0.5},
        {"lo": 0.8, "hi": 1.0, "n": 1, "confidence": 0.95, "accuracy": 1.0}]


def test_reliability_has_one_panel_per_curve_and_counts_that_do_not_collide():
    rng = np.random.default_rng(0)
    rows = []
    for name in ("origin", "avg", "max", "flex"):  # ten full bins each, close together: the old labels collided
        bins = [{"lo": b / 10, "hi": (b + 1) / 10, "n": int(rng.integers(1, 90)), "confidence": b / 10 + 0.05,
                 "accuracy": float(rng.uniform(0.2, 0.6))} for b in range(10)]
        rows.append({"name": name, "n": sum(b["n"] for b in bins), "bins": bins, "ece": 0.05})
    fig, drawn = reliability_figure(rows)
    assert drawn["panels"] == 4 and drawn["bins"] == 5
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 4
    for ax in panels:
        counts = [t for t in ax.texts if t.get_text().isdigit()]
        assert len(counts) == 5
        boxes = [t.get_window_extent(renderer) for t in counts]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
