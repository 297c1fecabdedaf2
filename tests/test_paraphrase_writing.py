"""Paraphrase writing you can watch and interrupt, in one cache every entry point shares.

The model's raw candidates are stubbed at ``writer.sample_step`` (``FakeWriter``: real paraphrases
of one question, or numbered variants of any other, chosen by the candidate's (round, set, j) so
they are the same whichever engine call asks), which also counts every call: a question written
once is never written again, by any entry point. Engine-call sizes are checked against a fake
clock, never timed.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from types import SimpleNamespace

import pytest

from selfensemble.config.gate import GateConfig
from selfensemble.data.base import Item
from selfensemble.pipeline.paraphrase import writer
from selfensemble.pipeline.paraphrase.cache import ParaphraseCache, legacy_key
from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig
from selfensemble.pipeline.paraphrase.writing import WritingBudget, write_paraphrases

PENICILLIN = "who discovered penicillin?"
GOOD = ["Who was the discoverer of penicillin?", "Which scientist discovered penicillin?",
        "Who is credited with discovering penicillin?", "Who first discovered penicillin?",
        "Which person discovered penicillin?", "Who found penicillin?", "Who made the discovery of penicillin?",
        "Penicillin was discovered by whom?", "Who was the first to discover penicillin?",
        "Which researcher discovered penicillin?"]  # all pass the default gate (wordllama similarity ≥ .79)
QUESTIONS = [f"what is the name of thing number {i}?" for i in range(10)]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeWriter:
    """Stands in for ``writer.sample_step``: counts calls, candidates per call and steps per question;
    each candidate row costs ``seconds_per_row`` on ``clock``; ``fail_at`` (a call number) raises."""

    def __init__(self, clock: FakeClock | None = None, seconds_per_row: float = 0.0, fail_at: int | None = None):
        self.clock, self.seconds_per_row, self.fail_at = clock, seconds_per_row, fail_at
        self.calls, self.rows, self.asked = 0, [], Counter()

    def __call__(self, engine, steps, cfg):
        if self.calls == self.fail_at:
            raise RuntimeError("killed mid-paraphrasing")
        self.calls += 1
        self.rows.append(sum(s.candidates for s in steps))
        self.asked.update(s.question for s in steps)
        if self.clock is not None:
            self.clock.now += self.rows[-1] * self.seconds_per_row
        return [[self.candidate(s, j) for j in range(s.candidates)] for s in steps]

    @staticmethod
    def candidate(step, j: int) -> str:
        index = (step.round * 3 + step.format) * 4 + j
        if step.question == PENICILLIN:
            return GOOD[index % len(GOOD)]
        return f"{step.question.rstrip('?')} (variant {index})?"


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / "cache"))
    fake = FakeWriter()
    monkeypatch.setattr(writer, "sample_step", fake)
    return fake


def stub_engine(batch_size: int = 8):
    """Engine-like: the writer only reads its batch size (sample_step is faked)."""
    return SimpleNamespace(config=SimpleNamespace(batch_size=batch_size))


# -- one cache for every entry point ------------------------------------------------------------------

def _ask(question: str) -> dict:
    from typer.testing import CliRunner

    from selfensemble.cli import _register_commands, app

    _register_commands()
    r = CliRunner().invoke(app, ["ask", question, "--model", "random:llama", "--method", "avg", "--num-paraphrases",
                                 "3", "--max-new-tokens", "2", "--json"])
    assert r.exit_code == 0, (r.output, r.exception)
    return json.loads(r.output.strip().splitlines()[-1])


def test_a_question_run_paraphrased_is_not_paraphrased_again_by_ask_lm_eval_or_serve(fake, random_lm):
    """`run` writes (through ensure_paraphrases, into its dataset-free cache); `ask`, the lm-eval adapter
    and `serve` then find the same entry: the writer is never called again."""
    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.load import LoadSpec
    from selfensemble.config.run import RunConfig
    from selfensemble.engine.engine import Engine
    from selfensemble.pipeline.paraphrase.items import ensure_paraphrases

    cfg = RunConfig(dataset="webqa", num_paraphrases=3, load=LoadSpec("random:llama"))
    [item] = ensure_paraphrases(stub_engine(), cfg, [Item("1", (PENICILLIN,), ("Fleming",))])
    assert fake.calls > 0 and len(item.prompts) == 3
    calls = fake.calls

    assert _ask(PENICILLIN)["prompts"] == list(item.prompts)
    pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
    from selfensemble.integrations.lm_eval import SelfEnsembleLM

    engine = Engine(random_lm("llama"), EngineConfig(attention="sdpa"))
    adapter = SelfEnsembleLM(model="random:llama", method="avg", num_paraphrases=3, engine=engine)
    assert adapter._generated([PENICILLIN]) == {PENICILLIN: list(item.prompts[1:])}
    pytest.importorskip("fastapi", reason="selfensemble[serve] is not installed")
    from fastapi.testclient import TestClient

    from selfensemble.serve import create_app

    assert engine.lm.spec == "random:llama"  # the served model's spec is the cache's model key
    with TestClient(create_app(engine, "random:llama")) as client:
        r = client.post("/v1/ensemble", json={"question": PENICILLIN, "num_paraphrases": 3, "methods": ["avg"],
                                              "max_new_tokens": 2})
    assert r.status_code == 200 and r.json()["prompts"] == list(item.prompts)
    assert fake.calls == calls  # nobody wrote again


def _v6_name(dataset: str, old_count: int) -> str:
    """The file name version 6 gave a cache (its ParaphraseCache, copied): model "m", gate off, default
    settings but ``num_paraphrases=old_count``, which then counted paraphrases besides the original."""
    import hashlib

    old = {"num_paraphrases": old_count, "shots": 4, "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 40,
           "attempts": 3, "seed": 0, "formats": 3}
    key = hashlib.sha256(json.dumps([6, "m", dataset, old, {"enabled": False}], sort_keys=True).encode()).hexdigest()
    return f"{dataset}-{key[:16]}.json"


def test_old_per_dataset_caches_are_read_with_their_old_count(fake, tmp_path):
    """A version-6 cache (one file per dataset, num_paraphrases = N - 1) is found and copied into the
    shared cache; one written for N - 1 = 3 (N = 4) does not serve N = 3."""
    cfg, gate = ParaphraseConfig(num_paraphrases=3), GateConfig(enabled=False)
    folder = tmp_path / "cache" / "paraphrases"
    folder.mkdir(parents=True)
    old = {"paraphrases": ["Which scientist discovered penicillin?", "Who found penicillin?"], "checks": [], "wanted": 2}
    assert _v6_name("webqa", 2) == f"webqa-{legacy_key('m', 'webqa', cfg, gate)}.json"
    (folder / _v6_name("webqa", 2)).write_text(json.dumps({PENICILLIN: old}))
    (folder / _v6_name("questions", 3)).write_text(  # N = 4 under the old count: must not serve N = 3
        json.dumps({QUESTIONS[0]: {"paraphrases": ["x?", "y?", "z?"], "checks": [], "wanted": 3}}))
    found = write_paraphrases(stub_engine, "m", [PENICILLIN], cfg, gate)
    assert found.entry(PENICILLIN) == old and fake.calls == 0
    assert ParaphraseCache("m", cfg, gate=gate).entry(PENICILLIN) == old  # now in the shared file
    assert write_paraphrases(stub_engine, "m", [QUESTIONS[0]], cfg, gate).entry(QUESTIONS[0])["wanted"] == 2
    assert fake.calls > 0


# -- checkpoints: a killed writer keeps what it finished -----------------------------------------------

def test_an_exception_after_k_questions_keeps_those_questions(fake, tmp_path):
    """One question per engine call (batch size 1, one step each): the call after k questions raises;
    the k are in the cache, final, equal to an uninterrupted run's; the rerun writes only the rest."""
    cfg = ParaphraseConfig(num_paraphrases=3, formats=1, attempts=1)
    reference = write_paraphrases(lambda: stub_engine(1), "ref", QUESTIONS, cfg).entries
    k = 4
    fake.fail_at, fake.calls, fake.asked = fake.calls + k, fake.calls, Counter()
    with pytest.raises(RuntimeError, match="killed"):
        write_paraphrases(lambda: stub_engine(1), "m", QUESTIONS, cfg)
    saved = ParaphraseCache("m", cfg)
    assert [q for q in QUESTIONS if saved.entry(q)] == QUESTIONS[:k]
    assert all(saved.entry(q) == reference[q] for q in QUESTIONS[:k])
    fake.fail_at, fake.asked = None, Counter()
    again = write_paraphrases(lambda: stub_engine(1), "m", QUESTIONS, cfg)
    assert set(fake.asked) == set(QUESTIONS[k:]) and again.entries == reference and again.cached == k


def test_a_question_stopped_mid_way_resumes_at_its_next_step(fake):
    """Three steps per question (three few-shot sets): stopped after the first, the saved state makes
    the rerun sample only the other two, and the entry equals an uninterrupted one."""
    cfg = ParaphraseConfig(num_paraphrases=4, attempts=1)  # 3 wanted, one candidate per set
    [ref] = writer.gated_paraphrases(None, [QUESTIONS[0]], cfg)
    fake.calls, fake.rows, fake.fail_at = 0, [], 1
    with pytest.raises(RuntimeError):
        write_paraphrases(stub_engine, "m", [QUESTIONS[0]], cfg)
    assert ParaphraseCache("m", cfg).partial(QUESTIONS[0])["format"] == 1
    fake.calls, fake.rows, fake.fail_at = 0, [], None
    assert write_paraphrases(stub_engine, "m", [QUESTIONS[0]], cfg).entry(QUESTIONS[0]) == ref
    assert fake.rows == [1, 1]


def test_engine_calls_are_cut_so_a_save_comes_at_least_every_checkpoint(monkeypatch, tmp_path):
    """At 5 s a candidate (fake clock), no engine call runs past the 60 s checkpoint (one question's
    first step probes the rate); at 1 ms a candidate, calls grow to the batch size (8 questions)."""
    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path))
    cfg = ParaphraseConfig(num_paraphrases=5, attempts=1)  # 4 wanted: steps of 2, 1, 1 candidates
    for seconds, model in ((5.0, "slow"), (0.001, "fast")):
        clock = FakeClock()
        fake = FakeWriter(clock, seconds)
        monkeypatch.setattr(writer, "sample_step", fake)
        questions = [f"what is the name of {model} thing number {i}?" for i in range(20)]
        write_paraphrases(stub_engine, model, questions, cfg, clock=clock)
        seconds_per_call = [r * seconds for r in fake.rows]
        if model == "slow":
            assert max(seconds_per_call) <= 60 and sum(fake.rows) == 20 * 4
            assert max(fake.rows) > 2  # not one question at a time: as many as fit in 3/4 of a checkpoint
        else:
            assert fake.rows[0] == 2 and max(fake.rows) >= 8 * 1  # after the probe, 8 questions' steps per call
    fake.rows = []
    write_paraphrases(stub_engine, "unpaced", QUESTIONS, cfg, clock=clock, checkpoint_s=math.inf)  # no pacing
    assert fake.rows[:2] == [2, 8 * 2 - 1] and sum(fake.rows) == 10 * 4


# -- progress: per question, per engine call -----------------------------------------------------------

def test_progress_events_arrive_per_question(fake):
    events, shown = [], []

    class Recording:
        def start(self, phase, total, done=0, unit="items"):
            shown.append(("start", phase, total, unit))

        def advance(self, n=1):
            shown.append(("advance", n))

        def end(self):
            shown.append(("end",))

        def note(self, message):
            pass

        def detail(self, text):
            shown.append(("detail", text))

    cfg = ParaphraseConfig(num_paraphrases=3)
    write_paraphrases(lambda: stub_engine(2), "m", QUESTIONS[:5], cfg, progress=Recording(), on_event=events.append)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and events[-1].stopped is None
    finished = [e for e in events if e.kind == "question"]
    assert [e.questions[0] for e in finished] == QUESTIONS[:5] and [e.done for e in finished] == [1, 2, 3, 4, 5]
    assert all(e.total == 5 for e in events)
    sampling = [e for e in events if e.kind == "sampling"]
    assert len(sampling) == fake.calls and all(e.candidates and "writing paraphrases" in e.message for e in sampling)
    assert shown[0] == ("start", "paraphrasing", 5, "questions") and shown.count(("advance", 1)) == 5
    assert sum(1 for s in shown if s[0] == "detail") == fake.calls and shown[-1] == ("end",)
    # a second call finds everything cached: no events at all
    events.clear()
    write_paraphrases(lambda: stub_engine(2), "m", QUESTIONS[:5], cfg, on_event=events.append)
    assert events == []


def test_console_progress_shows_the_detail_in_plain_lines():
    import io

    from rich.console import Console

    from selfensemble.cli.progress import ConsoleProgress

    buf, clock = io.StringIO(), FakeClock()
    p = ConsoleProgress(Console(file=buf, force_terminal=False, width=200), interval=30, clock=clock, heartbeat=False)
    p.start("paraphrasing", 10, unit="questions")
    p.detail("top-up round 2/3: 1 question; 6 candidates")
    clock.now = 31
    p.advance(1)
    p.end()
    lines = buf.getvalue().splitlines()
    assert lines[1].startswith("paraphrasing: 1/10 questions") and lines[1].endswith("(top-up round 2/3: 1 question; 6 "
                                                                                       "candidates)")


# -- the budget ----------------------------------------------------------------------------------------

def test_a_budget_stops_before_the_next_engine_call_and_the_next_call_continues(fake):
    clock = FakeClock()
    fake.clock, fake.seconds_per_row = clock, 5.0
    cfg = ParaphraseConfig(num_paraphrases=4, attempts=1)  # one candidate per set: 3 calls of 5 s
    found = write_paraphrases(stub_engine, "m", [QUESTIONS[0]], cfg, budget=WritingBudget(8, clock))
    assert fake.calls == 2 and found.unfinished == {QUESTIONS[0]} and len(found.entry(QUESTIONS[0])["paraphrases"]) == 2
    found = write_paraphrases(stub_engine, "m", [QUESTIONS[0]], cfg, budget=WritingBudget(8, clock))
    assert fake.calls == 3 and not found.unfinished and len(found.entry(QUESTIONS[0])["paraphrases"]) == 3


# -- one meaning of num_paraphrases in the Python API ----------------------------------------------------

def test_paraphrase_config_counts_prompts_and_refuses_one():
    from selfensemble.errors import ConfigError

    assert ParaphraseConfig(num_paraphrases=3).wanted == 2
    with pytest.raises(ConfigError, match="counts the prompts per question, the original included"):
        ParaphraseConfig(num_paraphrases=1)


# -- paraphrases only when a method uses them, and bounded by the server's budget ------------------------

@pytest.fixture
def counted_write(monkeypatch, fake):
    """Counts the calls of one_question.write (what ask, serve and lm-eval write through) besides the
    stubbed model calls (``fake``)."""
    from selfensemble.pipeline.paraphrase import one_question

    calls, real = [], one_question.write

    def write(*args, **kwargs):
        calls.append(args[3])  # N, prompts per question
        return real(*args, **kwargs)

    monkeypatch.setattr(one_question, "write", write)
    return calls


def _client(random_lm, **options):
    pytest.importorskip("fastapi", reason="selfensemble[serve] is not installed")
    from fastapi.testclient import TestClient

    from selfensemble.config.engine import EngineConfig
    from selfensemble.engine.engine import Engine
    from selfensemble.serve import create_app

    return TestClient(create_app(Engine(random_lm("llama"), EngineConfig(attention="sdpa")), **options))


def test_origin_alone_never_writes_paraphrases_on_any_endpoint(counted_write, fake, random_lm):
    with _client(random_lm) as client:
        for body in ({"question": PENICILLIN, "methods": ["origin"], "max_new_tokens": 2},
                     {"question": PENICILLIN, "methods": ["origin"], "num_paraphrases": 4, "max_new_tokens": 2}):
            r = client.post("/v1/ensemble", json=body)
            assert r.status_code == 200 and r.json()["prompts"] == [PENICILLIN], r.text
        assert "does not apply" in r.json()["notes"][0]  # a num_paraphrases given for origin alone is said unused
        for opts in ({"method": "origin"}, {"method": "origin", "num_paraphrases": 3}):
            r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": PENICILLIN}],
                                                          "max_tokens": 2, "selfensemble": opts})
            assert r.status_code == 200 and r.json()["selfensemble"]["prompts"] == [PENICILLIN], r.text
        assert counted_write == [] and fake.calls == 0
        r = client.post("/v1/ensemble", json={"question": PENICILLIN, "methods": ["origin", "avg"], "max_new_tokens": 2})
        assert r.status_code == 200 and len(r.json()["prompts"]) == 5  # avg uses them: N = 5 by default
        assert counted_write == [5] and fake.calls > 0


def test_ask_and_lm_eval_with_origin_never_write(counted_write, fake, random_lm):
    from typer.testing import CliRunner

    from selfensemble.cli import _register_commands, app

    _register_commands()
    r = CliRunner().invoke(app, ["ask", PENICILLIN, "--model", "random:llama", "--method", "origin",
                                 "--max-new-tokens", "2", "--json"])
    assert r.exit_code == 0 and json.loads(r.output.strip().splitlines()[-1])["prompts"] == [PENICILLIN]
    pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
    from selfensemble.config.engine import EngineConfig
    from selfensemble.engine.engine import Engine
    from selfensemble.integrations.lm_eval import SelfEnsembleLM

    adapter = SelfEnsembleLM(method="origin", num_paraphrases=5, engine=Engine(random_lm("llama"),
                                                                              EngineConfig(attention="sdpa")))
    assert adapter._generated([PENICILLIN]) == {}
    assert counted_write == [] and fake.calls == 0


def test_serve_budget_answers_with_the_prompts_it_has_and_says_so(fake, random_lm):
    """Each stubbed model call costs 10 s on a fake clock; a 15 s budget stops the writing after two
    calls (of the three one question needs at N = 4 with the gate's oversampling: 9 candidates over 3
    sets). The answer uses what passed so far, notes say so; the next request finishes the writing."""
    clock = FakeClock()
    fake.clock, fake.seconds_per_row = clock, 10.0 / 3  # 3 candidates per call
    body = {"question": PENICILLIN, "num_paraphrases": 4, "methods": ["avg"], "max_new_tokens": 2}
    with _client(random_lm, paraphrase_budget_s=15, clock=clock) as client:
        first = client.post("/v1/ensemble", json=body).json()
        assert fake.calls == 2
        assert 1 < len(first["prompts"]) <= 4 and "stopped at its 15 s budget" in first["notes"][0], first
        assert "written so far" in first["notes"][0]
        second = client.post("/v1/ensemble", json=body).json()
        assert fake.calls == 3 and len(second["prompts"]) == 4 and "budget" not in second["notes"][0]
        r = client.post("/v1/paraphrases", json={"question": PENICILLIN, "num_paraphrases": 4}).json()
        assert r["complete"] and r["paraphrases"] == second["prompts"][1:] and fake.calls == 3


@pytest.mark.parametrize("path, body", [
    ("/v1/ensemble", {"question": PENICILLIN, "num_paraphrases": 0}),
    ("/v1/paraphrases", {"question": PENICILLIN, "num_paraphrases": 1}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Q?"}], "selfensemble": {"num_paraphrases": 0}}),
])
def test_serve_refuses_a_count_that_only_made_sense_without_the_question(path, body, random_lm):
    with _client(random_lm) as client:
        r = client.post(path, json=body)
    assert r.status_code == 422 and "counts the prompts per question, the question included" in r.text, r.text
