"""Only gated prompts: a question the paraphrase gate leaves short is asked through fewer prompts, and
no run or fixed paraphrase file tops it up with ungated paraphrases."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from rich.console import Console

from selfensemble.config.gate import GateSettings
from selfensemble.config.run import RunConfig
from selfensemble.data import load_dataset
from selfensemble.data.base import Item
from selfensemble.errors import DataError
from selfensemble.pipeline.paraphrase.items import ensure_paraphrases

ROOT = Path(__file__).resolve().parents[1]
PARAPHRASES = ROOT / "benchmarks" / "results" / "confirm_webqa_paraphrases.jsonl"


def _confirm():
    spec = importlib.util.spec_from_file_location("confirm", ROOT / "benchmarks" / "experiments" / "confirm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _verdict(kept: list[str], dropped: list[str]) -> dict:
    return {"wanted": 4, "kept": len(kept), "candidates": [{"paraphrase": p, "kept": True} for p in kept]
            + [{"paraphrase": p, "kept": False, "reason": "similarity 0.2 < 0.7"} for p in dropped]}


def test_the_confirm_protocol_refuses_an_ungated_paraphrase_naming_the_question(tmp_path):
    rows = [{"id": "q1", "question": "who is sir francis bacon?", "answers": ["Philosopher"],
             "paraphrases": ["Who was francis bacon?"], "paraphrase_gate": _verdict(["Who was francis bacon?"], [])},
            {"id": "q2", "question": "what is jamie oliver children names?", "answers": ["Poppy"],
             "paraphrases": ["What are Jamie Oliver's children called?", "Who is the author of Gone Girl?"],
             "paraphrase_gate": _verdict(["What are Jamie Oliver's children called?"],
                                         ["Who is the author of Gone Girl?"])}]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="question 'q2' .*jamie oliver.* 'Who is the author of Gone Girl\\?' that the "
                                        "gate did not keep"):
        _confirm().check_gated(path)
    rows[1]["paraphrases"] = rows[1]["paraphrases"][:1]  # short, but gated: fine
    del rows[0]["paraphrase_gate"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="question 'q1' .*carries no gate verdict"):
        _confirm().check_gated(path)
    rows[0]["paraphrase_gate"] = _verdict(["Who was francis bacon?"], [])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _confirm().check_gated(path)


def test_the_committed_confirmatory_paraphrases_are_all_gated():
    _confirm().check_gated(PARAPHRASES)
    rows = [json.loads(x) for x in PARAPHRASES.read_text().splitlines()]
    short = [r for r in rows if len(r["paraphrases"]) < 4]
    assert len(rows) == 300 and len(short) == 114  # asked through fewer prompts, as the gate left them
    assert all(r["paraphrase_gate"]["kept"] == len(r["paraphrases"]) for r in rows)


def test_a_question_with_its_own_paraphrases_is_never_topped_up(tmp_path):
    """Gate off and fewer paraphrases than asked: the run asks what the question brings (no model is
    needed: None as engine would fail if the writer were called) and its record says so."""
    it = Item("q1", ("who is sir francis bacon?", "Who was francis bacon?"), ("Philosopher",))
    for gate in (GateSettings(enabled=False), GateSettings()):
        [out] = ensure_paraphrases(None, RunConfig(num_paraphrases=5, gate=gate), [it], Console(quiet=True))
        assert out.prompts == it.prompts
        assert any("2 own prompts, fewer than 5" in n for n in out.meta["record"]["notes"])


def test_a_fixed_file_s_gate_verdicts_reach_the_records(tmp_path):
    from selfensemble.engine.queries import Answer
    from selfensemble.store.records import make_record

    row = {"id": "q1", "question": "who is sir francis bacon?", "answers": ["Philosopher"],
           "paraphrases": ["Who was francis bacon?"],
           "paraphrase_gate": {**_verdict(["Who was francis bacon?"], ["Who is Jack?"]),
                               "note": "only 1 of 4 paraphrases passed the gate; asked through 2 prompts instead of padding"}}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(row) + "\n")
    ds = load_dataset("jsonl", path, paraphrase_columns="paraphrases", id_column="id")
    [item] = ensure_paraphrases(None, RunConfig(num_paraphrases=5, gate=GateSettings(enabled=False)), ds.items,
                                Console(quiet=True))
    assert item.prompts == ("who is sir francis bacon?", "Who was francis bacon?")
    ans = Answer(answer="x", method="avg", prompts=list(item.prompts), generation="x", per_prompt=None, logprob=0.0,
                 tokens=[], finish="eos", attention="sdpa", prefill_tokens=1)
    rec = make_record(item, ans, "avg", "contains", None)
    assert rec["paraphrase_gate"]["kept"] == 1 and rec["notes"] == [row["paraphrase_gate"]["note"]]
