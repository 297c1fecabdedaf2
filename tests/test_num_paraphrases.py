"""``num_paraphrases`` means one thing everywhere: N, the prompts a question is asked through, the
original included (issue 30). Every entry point is driven with N = 2 and N = 4 while the model's
candidates are stubbed (test_paraphrase_writing.FakeWriter: plenty of true paraphrases, so the gate
never leaves a question short); each must ask through exactly N prompts. An entry point that counted
paraphrases besides the original would give N + 1 and fail.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from selfensemble.config.engine import EngineConfig
from test_paraphrase_writing import PENICILLIN, FakeWriter


@pytest.fixture
def fake(monkeypatch, tmp_path) -> FakeWriter:
    """The model's candidates stubbed (true paraphrases of PENICILLIN), in a fresh cache."""
    from selfensemble.pipeline.paraphrase import writer

    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(writer, "sample_step", stub := FakeWriter())
    return stub


def _cli(*args: str):
    from selfensemble.cli import _register_commands, app

    _register_commands()
    r = CliRunner().invoke(app, list(args))
    assert r.exit_code == 0, (r.output, r.exception)
    return r


def _data(tmp_path) -> str:
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"id": "1", "question": PENICILLIN, "answers": ["Alexander Fleming"]}) + "\n")
    return str(path)


def _run(n, tmp_path, random_lm):
    _cli("run", "--dataset", "jsonl", "--data-path", _data(tmp_path), "--id-column", "id", "--model", "random:llama",
         "--attention", "sdpa", "--method", "avg", "--num-paraphrases", str(n), "--few-shot", "0",
         "--max-new-tokens", "2", "--out", str(tmp_path / "run"))
    [record] = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    return len(record["prompts"])


def _paraphrase(n, tmp_path, random_lm):
    out = tmp_path / "p.jsonl"
    _cli("paraphrase", "--dataset", "jsonl", "--data-path", _data(tmp_path), "--model", "random:llama",
         "--num-paraphrases", str(n), "--out", str(out))
    [row] = [json.loads(x) for x in out.read_text().splitlines()]
    assert row["num_paraphrases"] == n
    return 1 + len(row["paraphrases"])


def _ask(n, tmp_path, random_lm):
    r = _cli("ask", PENICILLIN, "--model", "random:llama", "--method", "avg", "--num-paraphrases", str(n),
             "--max-new-tokens", "2", "--json")
    return len(json.loads(r.output.strip().splitlines()[-1])["prompts"])


def _server(random_lm):
    pytest.importorskip("fastapi", reason="selfensemble[serve] is not installed")
    from fastapi.testclient import TestClient

    from selfensemble.engine.engine import Engine
    from selfensemble.serve import create_app

    return TestClient(create_app(Engine(random_lm("llama"), EngineConfig(attention="sdpa"))))


def _serve_ensemble(n, tmp_path, random_lm):
    with _server(random_lm) as client:
        r = client.post("/v1/ensemble", json={"question": PENICILLIN, "num_paraphrases": n, "methods": ["avg"],
                                              "max_new_tokens": 2})
    assert r.status_code == 200, r.text
    return len(r.json()["prompts"])


def _serve_chat(n, tmp_path, random_lm):
    with _server(random_lm) as client:
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": PENICILLIN}],
                                                      "max_tokens": 2,
                                                      "selfensemble": {"method": "avg", "num_paraphrases": n}})
    assert r.status_code == 200, r.text
    return len(r.json()["selfensemble"]["prompts"])


def _serve_paraphrases(n, tmp_path, random_lm):
    with _server(random_lm) as client:
        r = client.post("/v1/paraphrases", json={"question": PENICILLIN, "num_paraphrases": n})
    assert r.status_code == 200, r.text
    return 1 + len(r.json()["paraphrases"])


def _lm_eval(n, tmp_path, random_lm):
    pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
    from selfensemble.engine.engine import Engine
    from selfensemble.integrations.lm_eval import SelfEnsembleLM

    adapter = SelfEnsembleLM(method="avg", num_paraphrases=n, engine=Engine(random_lm("llama"),
                                                                           EngineConfig(attention="sdpa")))
    return 1 + len(adapter._generated([PENICILLIN])[PENICILLIN])


def _python(n, tmp_path, random_lm):
    from selfensemble.config.gate import GateConfig
    from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig, gated_paraphrases

    [entry] = gated_paraphrases(None, [PENICILLIN], ParaphraseConfig(num_paraphrases=n), GateConfig())
    return 1 + len(entry["paraphrases"])


ENTRY_POINTS = {"run": _run, "paraphrase": _paraphrase, "ask": _ask, "serve-ensemble": _serve_ensemble,
                "serve-chat": _serve_chat, "serve-paraphrases": _serve_paraphrases, "lm-eval": _lm_eval,
                "python-api": _python}


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_num_paraphrases_counts_the_prompts_in_every_entry_point(entry, n, fake, tmp_path, random_lm):
    assert ENTRY_POINTS[entry](n, tmp_path, random_lm) == n


def test_paraphrase_refuses_one_and_says_what_the_flag_counts_now(fake, tmp_path):
    from selfensemble.cli import _register_commands, app

    _register_commands()
    r = CliRunner().invoke(app, ["paraphrase", "--dataset", "jsonl", "--data-path", _data(tmp_path),
                                 "--num-paraphrases", "1", "--out", str(tmp_path / "p.jsonl")])
    assert r.exit_code != 0 and fake.calls == 0
    message = " ".join(str(r.exception).split()) + " ".join(r.output.split())
    assert "counts the prompts per question, the original included" in message, message
