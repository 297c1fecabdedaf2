"""Confidence = agreement of sampled answers with the greedy one; weights are Laplace-smoothed."""

from __future__ import annotations

from dataclasses import dataclass

from selfensemble.confidence import ConfidenceCache, ConfidenceConfig, PromptConfidence, estimate


@dataclass
class _A:
    per_prompt: list[str]


class ScriptedEngine:
    def __init__(self, greedy, samples):
        self.greedy, self.samples, self.seeds = greedy, list(samples), []

    def answer_many(self, queries, method, gen):
        assert method == "per_prompt"
        if not gen.do_sample:
            return [_A(list(self.greedy))]
        self.seeds.append(gen.seed)
        return [_A(list(self.samples.pop(0)))]


def test_agreement_counts_normalised_matches():
    eng = ScriptedEngine(["Paris", "Lyon"], [["paris.", "Lyon"], ["The Paris", "Nice"], ["Rome", "Nice"]])
    (confs,) = estimate(eng, [object()], ConfidenceConfig(samples=3))
    assert [c.agree for c in confs] == [2, 1]
    assert confs[0].confidence == 2 / 3 and confs[0].weight == 3 / 5
    assert confs[1].weight == 2 / 5
    assert eng.seeds == [0, 1, 2]


def test_empty_greedy_never_agrees():
    assert PromptConfidence("", ["", ""], 0).weight == 0.25
    eng = ScriptedEngine([""], [[""], [""]])
    (confs,) = estimate(eng, [object()], ConfidenceConfig(samples=2))
    assert confs[0].agree == 0


def test_cache_roundtrip(tmp_path):
    cfg = ConfidenceConfig(samples=2)
    c = ConfidenceCache("m", cfg, root=tmp_path)
    c.put("Q?", "fmt", PromptConfidence("a", ["a", "b"], 1))
    c.save()
    got = ConfidenceCache("m", cfg, root=tmp_path).get("Q?", "fmt")
    assert got == PromptConfidence("a", ["a", "b"], 1)
    assert ConfidenceCache("m", cfg, root=tmp_path).get("Q?", "other fmt") is None


def test_corrupt_cache_warns_and_starts_fresh(tmp_path):
    import pytest

    c = ConfidenceCache("m", ConfidenceConfig(), root=tmp_path)
    c.path.parent.mkdir(parents=True)
    c.path.write_text("{nope")
    with pytest.warns(UserWarning, match="corrupt"):
        assert ConfidenceCache("m", ConfidenceConfig(), root=tmp_path).get("Q?", "f") is None
