"""Paraphrase generation: filtering of empty/identical/duplicate outputs, seeding, the disk cache."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from selfensemble.paraphrase import (
    ParaphraseCache,
    ParaphraseConfig,
    acceptable,
    generate_paraphrases,
    paraphrase_format,
)


@dataclass
class _A:
    answer: str


class ScriptedEngine:
    """Returns scripted outputs per call, to exercise the filters without a model."""

    def __init__(self, outputs):
        self.outputs = list(outputs)
        self.calls = []

    def answer_many(self, queries, method, gen):
        self.calls.append((len(queries), method, gen.do_sample, gen.seed))
        return [_A(self.outputs.pop(0)) for _ in queries]


def test_filters_empty_identical_and_duplicates():
    eng = ScriptedEngine(["", "What is X?", "Is it X?", "is it x?", "X.", "Which X is it?", "Name X?"])
    out = generate_paraphrases(eng, ["What is X?"], ParaphraseConfig(num_paraphrases=3, attempts=3))
    assert out == [["Is it X?", "Which X is it?", "Name X?"]]
    assert all(method == "origin" and sampled for _, method, sampled, _ in eng.calls)
    assert len({seed for *_, seed in eng.calls}) == len(eng.calls)  # a fresh seed per pass


def test_gives_up_after_attempts_with_fewer():
    eng = ScriptedEngine(["Same?"] * 20)
    out = generate_paraphrases(eng, ["Q?"], ParaphraseConfig(num_paraphrases=3, attempts=2))
    assert out == [["Same?"]]


def test_rejects_non_questions_and_odd_lengths():
    assert acceptable("Which city is the capital?", "What is the capital city?")
    assert not acceptable("Paris.", "What is the capital city?")
    assert not acceptable("What?", "What is the name of the capital city of France?")
    assert not acceptable("What " * 30 + "?", "What is the capital?")
    assert acceptable("The capital of France is [MASK].", "[MASK] is the capital of France.")
    assert not acceptable("The capital of France is Paris.", "[MASK] is the capital of France.")


def test_formats_differ_per_index_and_are_seeded():
    cfg = ParaphraseConfig()
    assert paraphrase_format(0, cfg) == paraphrase_format(0, cfg)
    assert paraphrase_format(0, cfg).examples != paraphrase_format(1, cfg).examples


def test_cache_roundtrip_and_key(tmp_path):
    cfg = ParaphraseConfig(num_paraphrases=2)
    c = ParaphraseCache("m", "webqa", cfg, root=tmp_path)
    c.put_many({"Q?": ["A?", "B?"]})
    assert ParaphraseCache("m", "webqa", cfg, root=tmp_path).get("Q?") == ["A?", "B?"]
    assert ParaphraseCache("other", "webqa", cfg, root=tmp_path).get("Q?") is None
    c.path.write_text("{corrupt")
    with pytest.warns(UserWarning, match="corrupt"):
        assert ParaphraseCache("m", "webqa", cfg, root=tmp_path).get("Q?") is None
