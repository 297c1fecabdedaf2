"""The report's charts, checked on the data they return (title, slots, curves), not on pixels."""

from __future__ import annotations

from pathlib import Path

from selfensemble.analysis.plots import chart_slots, chart_title, plot_reliability, plot_summary


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
