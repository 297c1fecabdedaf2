"""Long runs that never lose work: paraphrases are saved after every engine call (finished questions
final, the others as their state) and sampled confidence per batch; a run killed (SIGKILL) at any
engine call or in the middle of a cache write resumes without redoing saved work and ends with
exactly an uninterrupted run's entries; two processes share one cache.

The kill-anywhere sweeps use an engine-like stub whose every row is a pure function of the row's
own sampling stream and the call's seed (what the real engine guarantees, checked for paraphrases
on a random model in tests/test_batch_invariance.py), so they are fast enough to kill at every single engine call.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from collections import Counter
from types import SimpleNamespace

import pytest

from selfensemble.config.load import LoadSpec
from selfensemble.config.run import RunConfig
from selfensemble.data.base import Item
from selfensemble.engine.decoding import candidate_seed, derive_seed
from selfensemble.engine.queries import Query
from selfensemble.pipeline.backends import as_backend
from selfensemble.pipeline.confidence import query_weights
from selfensemble.pipeline.paraphrase.cache import ParaphraseCache
from selfensemble.pipeline.paraphrase.items import paraphrase_items
from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig
from selfensemble.pipeline.progress import NullProgress

FORK = multiprocessing.get_context("fork")
QUESTIONS = [f"What is the name of thing number {i}?" for i in range(10)]
PCFG = ParaphraseConfig(num_paraphrases=3, seed=3)  # the question and 2 paraphrases


class StreamEngine:
    """Engine-like stub: a row's answer depends only on (call seed, row stream), never on its batch.

    Paraphrases collide often (5 variants), so retries and batches of uneven cost happen. Counts
    calls and how often each question was asked; ``stop_at`` (a call number) makes the process
    signal ``reached`` and wait there, to be killed.
    """

    def __init__(self, batch_size: int = 3, stop_at: int | None = None, reached=None):
        self.config = SimpleNamespace(batch_size=batch_size)
        self.calls, self.asked, self.log, self.rows = 0, Counter(), [], []
        self.stop_at, self.reached = stop_at, reached

    def _call(self, queries) -> None:
        if self.calls == self.stop_at:
            self.reached.set()
            signal.pause()  # the test kills this process here
        self.calls += 1
        self.log.append({q.prompts[0] for q in queries})
        for q in queries:
            self.asked[q.prompts[0]] += 1

    @staticmethod
    def _variant(q, gen, key) -> str:
        seed = gen.seed if gen.do_sample else "greedy"
        return f"{q.prompts[0].rstrip('?')} variant {derive_seed(seed, key) % 5}?"

    def answer_many(self, queries, method, gen, on_done=None):
        self._call(queries)
        seed = gen.seed if gen.do_sample else "greedy"
        return [SimpleNamespace(answer=self._variant(q, gen, q.stream_key), per_prompt=[
            f"a{derive_seed(seed, q.stream_key, i) % 3}" for i in range(len(q.prompts))]) for q in queries]

    def sample(self, queries, n_samples, gen):
        """Like Engine.sample: n answers per query, sample j from stream candidate_seed(key, j)."""
        self._call(queries)
        counts = [n_samples] * len(queries) if isinstance(n_samples, int) else list(n_samples)
        self.rows.append(sum(counts))
        return [[SimpleNamespace(answer=self._variant(q, gen, candidate_seed(q.stream_key, j))) for j in range(n)]
                for q, n in zip(queries, counts, strict=True)]


def _items() -> list[Item]:
    return [Item(str(i), (q,), ("x",)) for i, q in enumerate(QUESTIONS)]


def _paraphrase(engine) -> dict:
    return paraphrase_items(lambda: engine, "stub", _items(), PCFG, NullProgress()).entries


CCFG = RunConfig(load=LoadSpec("stub", seed=0), confidence_samples=3)


def _queries() -> list[Query]:
    return [Query([q, q.upper()], "fmt", seed=derive_seed(0, i)) for i, q in enumerate(QUESTIONS)]


def _confidence(engine) -> list:
    return query_weights(as_backend(engine), CCFG, _queries(), NullProgress())


def _killed_at(work, call: int) -> bool:
    """Run ``work(engine)`` in a forked process, SIGKILL it when it starts engine call ``call``;
    False if it finished before reaching that call."""
    reached = FORK.Event()
    proc = FORK.Process(target=lambda: work(StreamEngine(stop_at=call, reached=reached)))
    proc.start()
    while proc.is_alive() and not reached.wait(0.05):
        pass
    if reached.is_set():
        os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    return reached.is_set()


def _cache_file(kind: str, root) -> dict:
    """Every entry of the one cache file under ``root/kind`` ({} if none yet)."""
    from selfensemble.store import jsoncache

    names = {p.name.split(".json")[0] for p in (root / kind).glob("*.json*")} if (root / kind).exists() else set()
    assert len(names) <= 1, names
    return jsoncache.read(root / kind / f"{names.pop()}.json", kind) if names else {}


def _final(entries: dict) -> dict:
    """The finished entries of a paraphrase cache (not the saved state of a question stopped mid-way)."""
    return {k: v for k, v in entries.items() if "partial" not in v}


@pytest.mark.parametrize("kind", ["paraphrases", "confidence"])
def test_kill_at_every_engine_call_then_resume(kind, tmp_path, monkeypatch):
    """At each kill point the rerun asks no question whose entry was saved and ends with exactly the
    entries (and weights) of an uninterrupted run. Paraphrases are saved after every engine call, so
    the killed run and the rerun together sample exactly the reference's candidates (nothing is
    redone); confidence redoes at most the one batch in flight."""
    work = _paraphrase if kind == "paraphrases" else _confidence
    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / "ref"))
    ref_engine = StreamEngine()
    ref_result = work(ref_engine)
    reference = _cache_file(kind, tmp_path / "ref")
    assert len(reference) == (10 if kind == "paraphrases" else 20)
    calls_per_batch = 1 + CCFG.confidence_samples if kind == "confidence" else PCFG.attempts * PCFG.num_paraphrases
    figures, batch = [], StreamEngine().config.batch_size
    for call in range(ref_engine.calls):
        root = tmp_path / f"kill{call}"
        monkeypatch.setenv("SELFENSEMBLE_CACHE", str(root))
        assert _killed_at(work, call)
        saved = _cache_file(kind, root)
        saved = _final(saved) if kind == "paraphrases" else saved
        assert all(reference[k] == v for k, v in saved.items())  # a saved entry is already the final one
        engine = StreamEngine()
        result = work(engine)
        saved_questions = ({q for q in QUESTIONS if q in saved} if kind == "paraphrases" else
                           {q for q, qq in zip(QUESTIONS, _queries(), strict=True)
                            if all(_confidence_key(qq, i) in saved for i in range(2))})
        assert not saved_questions & set(engine.asked), f"kill at call {call}: saved questions asked again"
        assert _cache_file(kind, root) == reference and result == ref_result
        if kind == "paraphrases":  # calls 0..call-1 ran and were saved; the rerun samples only the rest
            assert sum(ref_engine.rows[:call]) + sum(engine.rows) == sum(ref_engine.rows), f"kill at call {call}"
            figures.append(sum(engine.rows))
            continue
        redone = call + engine.calls - ref_engine.calls  # engine calls whose work the kill threw away
        assert 0 <= redone < calls_per_batch, f"kill at call {call} redid {redone} calls"
        # the same run asks the same questions in the same order: the killed run had asked these
        asked_before = set().union(*ref_engine.log[: call + 1])
        again = asked_before & set(engine.asked)
        assert len(again) <= batch, f"kill at call {call}: {len(again)} questions asked again (> one batch)"
        figures.append((redone, len(again)))
    print(f"{kind}: {len(figures)} kill points, (engine calls, questions) redone or candidates left per kill: "
          f"{figures}")


def _confidence_key(query, index):
    from selfensemble.pipeline.confidence import ConfidenceCache

    return ConfidenceCache.key(query, index)


def test_kill_in_the_middle_of_a_cache_write(tmp_path, monkeypatch):
    """SIGKILL when half of the second save's lines are on disk: the cache holds the first save and
    the complete lines of the second, the unfinished line is cut off, and the rerun completes the
    cache to the reference without asking a question whose final entry was saved."""
    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / "ref"))
    _paraphrase(StreamEngine())
    reference = _cache_file("paraphrases", tmp_path / "ref")
    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / "run"))
    reached = FORK.Event()

    def child():
        from selfensemble.store import jsoncache

        real, writes = jsoncache._append, [0]

        def append(fh, data):
            writes[0] += 1
            if writes[0] == 2:
                real(fh, data[: len(data) // 2 + 7])  # a line and a half of three
                reached.set()
                signal.pause()
            real(fh, data)

        jsoncache._append = append
        _paraphrase(StreamEngine())

    proc = FORK.Process(target=child)
    proc.start()
    assert reached.wait(60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    saved = _cache_file("paraphrases", tmp_path / "run")
    # save 1: the first call's one question (its state); save 2: three lines, of which one was completed
    assert list(saved) == QUESTIONS[:1] and len(_final(saved)) <= 1
    assert all(reference[q] == e for q, e in _final(saved).items())
    engine = StreamEngine()
    _paraphrase(engine)
    assert not set(engine.asked) & set(_final(saved))
    assert _cache_file("paraphrases", tmp_path / "run") == reference


def _writer(root, prefix: str, start, n: int) -> None:
    start.wait(10)
    cache = ParaphraseCache("m", PCFG, root=root)
    for i in range(n):  # one entry per write: as many chances as possible to overwrite the other's
        cache.put_many({f"{prefix}{i}?": {"paraphrases": [f"{prefix}-{i}?"], "checks": [], "wanted": 1}})


def test_two_processes_writing_one_cache_keep_both_sets(tmp_path):
    start = FORK.Event()
    procs = [FORK.Process(target=_writer, args=(tmp_path, p, start, 40)) for p in ("a", "b")]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    got = ParaphraseCache("m", PCFG, root=tmp_path)
    assert {q for q in got.data} == {f"{p}{i}?" for p in "ab" for i in range(40)}


def test_confidence_cache_save_merges_with_another_writer(tmp_path):
    """Two caches opened on the same file (two runs): each save keeps what the other saved."""
    from selfensemble.pipeline.confidence import ConfidenceCache, ConfidenceConfig, PromptConfidence

    one, two = (ConfidenceCache("m", ConfidenceConfig(), root=tmp_path) for _ in range(2))
    q1, q2 = Query(["A?"], "f", seed=1), Query(["B?"], "f", seed=2)
    one.put(q1, 0, PromptConfidence("a", ["a"], 1))
    one.save()
    two.put(q2, 0, PromptConfidence("b", ["c"], 0))
    two.save()  # its in-memory copy never had q1
    again = ConfidenceCache("m", ConfidenceConfig(), root=tmp_path)
    assert again.get(q1, 0) == PromptConfidence("a", ["a"], 1)
    assert again.get(q2, 0) == PromptConfidence("b", ["c"], 0)


# -- the command line, end to end on a random model -------------------------------------------------

def _cli(out, extra=()):
    import sys

    from selfensemble.pipeline.experiment import SAMPLE_DATA

    return [sys.executable, "-m", "selfensemble", "run", "--dataset", "jsonl", "--data-path", str(SAMPLE_DATA),
            "--id-column", "id", "--model", "random:llama", "--attention", "sdpa", "--batch-size", "1",
            "--method", "weighted_avg", "--num-paraphrases", "3", "--no-gate", "--few-shot", "0",
            "--max-new-tokens", "4", "--limit", "8", "--out", str(out), *extra]


def _start(args, cache, log):
    import subprocess

    env = {**os.environ, "SELFENSEMBLE_CACHE": str(cache), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _stop_when(proc, ready, sig, what: str) -> None:
    """Poll (bounded) until ``ready()``, then send ``sig``; fails if the run ended first."""
    import time

    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and not ready():
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before {what}"
    proc.send_signal(sig)
    proc.wait(120)


def _entries(root, kind: str) -> int:
    """Finished entries (a paraphrase cache also holds the state of questions stopped mid-way)."""
    return len(_final(_cache_file(kind, root)))


def _strip(path, approx: bool = False) -> list[dict]:
    """Records without timings and with confidences as ``pytest.approx`` (relative 1e-4): the
    uninterrupted run wrote paraphrases in the same process before answering, so its prefix KV came
    from other batch shapes and float sums differ in the last bits (seen: 2.41649446e-18 vs
    2.41649677e-18). Every text, count and flag must still be equal exactly."""
    rows = [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in path.read_text().splitlines()]
    for row in rows:
        if approx and isinstance(row.get("confidence"), float):
            row["confidence"] = pytest.approx(row["confidence"], rel=1e-4)
    return rows


@pytest.mark.slow
def test_cli_killed_and_stopped_in_every_phase_resumes_to_the_uninterrupted_records(tmp_path):
    """kill -9 while paraphrasing, SIGTERM while paraphrasing, kill -9 while sampling confidence,
    then the same command again: the records equal an uninterrupted run's, no saved batch is
    written twice (the logs count what each run still had to do), and the piped logs show each
    phase's progress lines."""
    import re
    import subprocess

    ref = tmp_path / "ref"
    done = _start(_cli(ref / "out"), ref / "cache", tmp_path / "ref.log")
    assert done.wait(600) == 0, (tmp_path / "ref.log").read_text()
    ref_log = (tmp_path / "ref.log").read_text()
    for phase in ("loading", "paraphrasing", "confidence", "weighted_avg"):
        assert re.search(rf"^{phase}: start \d+/\d+ ", ref_log, re.M), ref_log
        assert re.search(rf"^{phase}: done (\d+)/\1 ", ref_log, re.M), ref_log
    assert "━" not in ref_log  # no bar drawn into a log file

    cache, out = tmp_path / "cache", tmp_path / "out"
    logs = [tmp_path / f"run{i}.log" for i in range(4)]
    proc = _start(_cli(out), cache, logs[0])
    _stop_when(proc, lambda: _entries(cache, "paraphrases") >= 1, signal.SIGKILL, "a paraphrase batch was saved")
    first = _entries(cache, "paraphrases")
    assert 1 <= first < 8

    proc = _start(_cli(out), cache, logs[1])
    _stop_when(proc, lambda: _entries(cache, "paraphrases") > first, signal.SIGTERM, "another batch was saved")
    log = logs[1].read_text()
    assert proc.returncode == 143 and "Traceback" not in log, log
    assert re.search(rf"paraphrasing {8 - first} questions \({first} already cached(, 1 resumed where they stopped)?\)",
                     log), log
    assert "resume by running the same command again" in log and "selfensemble run --dataset jsonl" in log
    second = _entries(cache, "paraphrases")
    assert first < second < 8

    proc = _start(_cli(out), cache, logs[2])
    _stop_when(proc, lambda: _entries(cache, "confidence") >= 1, signal.SIGKILL, "a confidence batch was saved")
    sampled = _entries(cache, "confidence")
    assert re.search(rf"paraphrasing {8 - second} questions \({second} already cached(, 1 resumed where they "
                     r"stopped)?\)", logs[2].read_text())
    assert 1 <= sampled < 8

    last = subprocess.run(_cli(out), capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SELFENSEMBLE_CACHE": str(cache), "PYTHONWARNINGS": "ignore"})
    assert last.returncode == 0, last.stderr
    assert "paraphrasing" not in last.stdout.split("weighted_avg: start")[0].replace("loading", "")
    assert f"estimating confidence for {8 - sampled} questions" in last.stdout
    assert _cache_file("paraphrases", cache) == _cache_file("paraphrases", ref / "cache")
    assert _cache_file("confidence", cache) == _cache_file("confidence", ref / "cache")
    assert _strip(out / "results.jsonl") == _strip(ref / "out" / "results.jsonl", approx=True)


# -- graceful stop ----------------------------------------------------------------------------------

@pytest.mark.parametrize("stop, status", [(lambda: os.kill(os.getpid(), signal.SIGTERM), 143),
                                          (lambda: (_ for _ in ()).throw(KeyboardInterrupt()), 130)])
def test_graceful_stop_exits_128_plus_signal_with_a_resume_line(stop, status, capsys, monkeypatch):
    """SIGTERM and Ctrl-C unwind through every ``finally`` (the ``cleaned`` flag), print how to
    resume, exit 128 + signal; the previous SIGTERM handler is back afterwards."""
    import sys

    from selfensemble.cli.run import graceful_stop

    monkeypatch.setattr(sys, "argv", ["selfensemble", "run", "--limit", "8"])
    before, cleaned = signal.getsignal(signal.SIGTERM), []
    with pytest.raises(SystemExit) as exit_info, graceful_stop():
        try:
            stop()  # SIGTERM: the handler raises as soon as os.kill returns
        finally:
            cleaned.append(True)
    assert exit_info.value.code == status and cleaned == [True]
    err = capsys.readouterr().err
    assert "resume by running the same command again" in err and "selfensemble run --limit 8" in err
    assert signal.getsignal(signal.SIGTERM) is before
