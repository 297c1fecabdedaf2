"""Costs that can be trusted: interleaved timing rounds with medians (pipeline/timing.py), the report's
median and spread over a run's batches (analysis/costs.py), and a warning when the machine was busy."""

from __future__ import annotations

import pytest

from selfensemble.analysis.costs import batch_seconds, seconds_cell, timing_notes, timing_summary
from selfensemble.pipeline import timing
from selfensemble.pipeline.demo import method_rows


class Clock:
    """A fake clock and engine: answering takes a set number of seconds per question, per method and round."""

    def __init__(self, cost: dict[str, list[float]]):
        self.now, self.cost, self.calls = 0.0, cost, []

    def perf_counter(self) -> float:
        return self.now

    def answer_many(self, queries, method, gen=None):
        self.calls.append((method, len(queries)))
        if len(queries) > 1:  # the one-query warm-up is not timed
            timed = sum(1 for m, n in self.calls if m == method and n > 1) - 1
            self.now += self.cost[method][timed] * len(queries)


def test_rounds_are_interleaved_and_summarised_by_their_median(monkeypatch):
    clock = Clock({"origin": [1.0, 3.0, 1.2], "avg": [2.0, 6.0, 2.2], "flex": [1.5, 4.5, 9.0]})
    monkeypatch.setattr(timing.time, "perf_counter", clock.perf_counter)
    monkeypatch.setattr(timing, "machine_load", lambda: 1.0)
    out = timing.time_methods(clock, ["origin", "avg", "flex"], list(range(10)), None,
                              rounds=3, facts=4)
    timed = [m for m, n in clock.calls if n == 4]
    assert timed == ["origin", "avg", "flex", "avg", "flex", "origin", "flex", "origin", "avg"]  # each round starts elsewhere
    assert [m for m, n in clock.calls if n == 1] == ["origin", "avg", "flex"]  # warm-up first, one query each
    flex = out["methods"]["flex"]
    assert flex["samples"] == pytest.approx([1.5, 4.5, 9.0]) and flex["median"] == pytest.approx(4.5)
    assert flex["min"] == pytest.approx(1.5) and flex["max"] == pytest.approx(9.0) and flex["n"] == 3
    # × origin per round: 1.5, 1.5, 7.5 → median 1.5 (a busy round moves one ratio, not the median)
    assert flex["x_origin"]["median"] == pytest.approx(1.5) and flex["x_origin"]["max"] == pytest.approx(7.5)
    assert out["methods"]["avg"]["x_origin"]["median"] == pytest.approx(2.0)
    assert out["warning"] is None and out["facts"] == 4 and out["rounds"] == 3


def test_a_derived_method_gets_its_sources_times(monkeypatch):
    clock = Clock({"origin": [1.0, 1.0], "per_prompt": [3.0, 5.0]})
    monkeypatch.setattr(timing.time, "perf_counter", clock.perf_counter)
    out = timing.time_methods(clock, ["origin", "per_prompt", "vote"], list(range(3)), None, rounds=2, facts=2,
                              derived={"vote": "per_prompt"})
    assert "vote" not in {m for m, _ in clock.calls}
    assert out["methods"]["vote"]["samples"] == out["methods"]["per_prompt"]["samples"] == pytest.approx([3.0, 5.0])
    assert out["methods"]["vote"]["derived_from"] == "per_prompt"


def test_busy_machine_warning():
    assert timing.busy_warning([1.5, 1.9], cpus=2) is None
    assert "load average reached 3.4 on 2 cores" in timing.busy_warning([1.0, 3.4, None], cpus=2)
    assert timing.busy_warning([None], cpus=2) is None


def test_demo_rows_take_the_timing_medians_and_ranges():
    rows = method_rows([{"method": "origin", "accuracy": 0.3, "seconds_per_item": 0.5},
                        {"method": "flex", "accuracy": 0.4, "seconds_per_item": 9.0}],
                       {"methods": {"origin": {"median": 1.0, "min": 0.9, "max": 3.0, "n": 3,
                                               "x_origin": {"median": 1.0, "min": 1.0, "max": 1.0, "n": 3}},
                                    "flex": {"median": 1.5, "min": 1.4, "max": 9.0, "n": 3,
                                             "x_origin": {"median": 1.5, "min": 1.5, "max": 3.0, "n": 3}}}})
    flex = rows[1]
    assert flex["seconds_per_item"] == 1.5 and flex["seconds_range"] == [1.4, 9.0] and flex["timing_samples"] == 3
    assert flex["cost_x_origin"] == 1.5 and flex["cost_range"] == [1.5, 3.0]


def test_report_cost_is_the_median_over_batches_with_its_spread():
    recs = [{"seconds": s} for s in (0.6, 0.6, 0.6, 0.8, 0.8, 0.4, 0.4, 1.2)]
    assert batch_seconds(recs) == [0.6, 0.8, 0.4, 1.2]
    manifest = {"sessions": [{"load_average": [1.0, 1.2], "cpus": 2}, {"load_average": [3.5, None], "cpus": 2}]}
    t = timing_summary(recs, manifest)
    assert t["seconds_median"] == pytest.approx(0.7) and t["timing_batches"] == 4
    assert t["seconds_q1"] == pytest.approx(0.55) and t["seconds_q3"] == pytest.approx(0.9)
    assert t["timing_load"] == 3.5 and t["timing_cpus"] == 2
    assert seconds_cell({"method": "avg", **t}) == "0.70 (0.55–0.90)"
    one = timing_summary([{"seconds": 0.3}, {"seconds": 0.3}], {})
    assert seconds_cell(one) == "0.30 (1 batch)"
    notes = timing_notes([{"method": "avg", "name": "avg", **t}])
    assert any("median over the run's timed batches" in n for n in notes)
    assert any("exceeded its cores: avg (load 3.5 on 2 cores)" in n for n in notes)
