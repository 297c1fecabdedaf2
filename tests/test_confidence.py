"""Confidence = agreement of sampled answers with the greedy one; weights are Laplace-smoothed."""

from __future__ import annotations

from dataclasses import dataclass

from selfensemble.pipeline.confidence import ConfidenceCache, ConfidenceConfig, PromptConfidence, estimate


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
    from selfensemble.engine.queries import Query

    cfg = ConfidenceConfig(samples=2)
    c = ConfidenceCache("m", cfg, root=tmp_path)
    q = Query(["Q?", "P?"], "fmt", seed=7)
    c.put(q, 0, PromptConfidence("a", ["a", "b"], 1))
    c.save()
    got = ConfidenceCache("m", cfg, root=tmp_path)
    assert got.get(q, 0) == PromptConfidence("a", ["a", "b"], 1)
    assert got.get(q, 1) is None
    assert got.get(Query(["Q?", "P?"], "other fmt", seed=7), 0) is None


def test_cache_entries_belong_to_their_query_stream(tmp_path):
    """The same prompt text in another query (another item: another sampling stream) draws other
    samples, so it must not reuse this query's entry; nor may entries of the old shared sampler."""
    import hashlib
    import json

    from selfensemble.engine.queries import Query
    from selfensemble.pipeline import confidence

    cfg = ConfidenceConfig(samples=2)
    c = ConfidenceCache("m", cfg, root=tmp_path)
    c.put(Query(["Q?"], "fmt", seed=1), 0, PromptConfidence("a", ["a", "a"], 2))
    assert c.get(Query(["Q?"], "fmt", seed=2), 0) is None
    assert c.get(Query(["Q?", "P?"], "fmt"), 0) is None  # stream keyed by all its prompts
    old = hashlib.sha256(json.dumps(["m", cfg.__dict__], sort_keys=True).encode()).hexdigest()[:16]
    assert c.path.name != f"{old}.json" and confidence.SAMPLER_VERSION >= 2


def test_corrupt_cache_is_refused_with_its_path(tmp_path):
    """A corrupt file would otherwise be replaced by the next save, losing every entry in it."""
    import pytest

    from selfensemble.errors import SelfEnsembleError

    c = ConfidenceCache("m", ConfidenceConfig(), root=tmp_path)
    c.path.parent.mkdir(parents=True)
    c.path.write_text("{nope")
    with pytest.raises(SelfEnsembleError, match=f"{c.path}.*delete it"):
        ConfidenceCache("m", ConfidenceConfig(), root=tmp_path)
    c.path.write_text("[1, 2]")  # valid JSON, but not the object a cache is
    with pytest.raises(SelfEnsembleError, match="not an object"):
        ConfidenceCache("m", ConfidenceConfig(), root=tmp_path)
