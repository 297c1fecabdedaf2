"""`serve` streaming: OpenAI streamed chunks, /v1/ensemble events, refusals, and a client that leaves.

Uses the one shared server (conftest.py ``server``). The reference for every streamed answer is
``Engine.answer`` asked alone on a second engine (what `selfensemble ask` computes), and the same
request not streamed.
"""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("fastapi", reason="selfensemble[serve] is not installed")
httpx = pytest.importorskip("httpx", reason="the dev extra (httpx) is not installed")

from selfensemble.config.generation import GenerationConfig  # noqa: E402
from selfensemble.engine.prompts import default_format  # noqa: E402

MODEL = "test-llama"  # conftest.SERVE_MODEL
QUESTION = "What is the capital of France?"
PARAS = ["Which city is the capital of France?", "Name the capital city of France."]
TOKENS = 12


def alone(server, prompts, method, tokens=TOKENS, stop=()):
    return server.reference.answer(prompts, method, GenerationConfig(max_new_tokens=tokens, stop_strings=stop),
                                   default_format(True))


def events(response) -> list[tuple[str | None, str]]:
    """(event name, data) of each server-sent event of a streamed response."""
    out, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            out.append((name, line[6:]))
            name = None
    return out


@pytest.mark.parametrize("method", ["avg", "flex", "origin"])
def test_openai_client_streams_the_non_streamed_answer(server, method):
    openai = pytest.importorskip("openai", reason="the openai client is not installed (dev extra)")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    extra = {"selfensemble": {"method": method, "paraphrases": PARAS}}
    messages = [{"role": "user", "content": QUESTION}]
    whole = client.chat.completions.create(model=MODEL, max_tokens=TOKENS, messages=messages, extra_body=extra)
    chunks = list(client.chat.completions.create(model=MODEL, max_tokens=TOKENS, messages=messages, stream=True,
                                                 stream_options={"include_usage": True}, extra_body=extra))
    ref = alone(server, [QUESTION, *PARAS], method)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(deltas) == whole.choices[0].message.content == ref.answer
    assert len(deltas) > 1, "the answer came in one piece"
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    last = [c for c in chunks if c.choices][-1]
    assert last.choices[0].finish_reason == whole.choices[0].finish_reason
    assert last.model_extra["selfensemble"]["prompts"] == [QUESTION, *PARAS]
    assert chunks[-1].usage.completion_tokens == len(ref.tokens) == whole.usage.completion_tokens

    text = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt=QUESTION, max_tokens=TOKENS, stream=True, extra_body=extra))
    plain = client.completions.create(model=MODEL, prompt=QUESTION, max_tokens=TOKENS, extra_body=extra)
    assert text == plain.choices[0].text == ref.answer


def test_a_stop_string_is_never_streamed(server):
    full = alone(server, [QUESTION, *PARAS], "avg").answer
    stop = full[len(full) // 2:len(full) // 2 + 2]
    body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": TOKENS, "stop": [stop],
            "stream": True, "selfensemble": {"method": "avg", "paraphrases": PARAS}}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=120) as r:
        got = [json.loads(d) for _, d in events(r) if d != "[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in got)
    assert text == alone(server, [QUESTION, *PARAS], "avg", stop=(stop,)).answer == full[:len(full) // 2].strip()


@pytest.mark.parametrize("path, body, message", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}], "stream": True, "n": 2}, "n=2"),
    ("/v1/completions", {"prompt": QUESTION, "stream": True, "n": 3}, "n=3"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}], "stream": True,
                              "selfensemble": {"method": "vote", "paraphrases": PARAS}}, "vote cannot stream"),
    ("/v1/completions", {"prompt": ["a?", "b?"]}, "one question per request"),
])
def test_refused_streams_are_400_before_any_event(server, path, body, message):
    r = httpx.post(server.url + path, json=body, timeout=60)
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json"), r.text
    assert message in r.json()["error"]["message"]


def test_ensemble_streams_each_method_and_says_when_it_writes_paraphrases(server, monkeypatch):
    from selfensemble.pipeline.paraphrase import writer

    question = "Which river flows through Paris?"
    offered = ["Which river runs through Paris?", "What river flows through the city of Paris?"]
    monkeypatch.setattr(writer, "sample_step", lambda engine, steps, cfg: [list(offered) for _ in steps])
    body = {"question": question, "num_paraphrases": 3, "methods": ["origin", "flex", "vote"],
            "max_new_tokens": TOKENS, "stream": True}
    with httpx.stream("POST", server.url + "/v1/ensemble", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        got = events(r)
    names = [n for n, _ in got]
    assert names.index("selfensemble") < names.index("prompts"), names  # the writing phase is shown first
    assert json.loads(got[names.index("selfensemble")][1])["phase"] == "writing paraphrases"
    prompts = json.loads(got[names.index("prompts")][1])["prompts"]
    assert prompts[0] == question and sorted(prompts[1:]) == sorted(offered)
    assert got[-1] == (None, "[DONE]")
    results = {json.loads(d)["method"]: json.loads(d) for n, d in got if n == "result"}
    deltas = {m: "".join(json.loads(d)["delta"] for n, d in got[:-1] if n is None and json.loads(d)["method"] == m)
              for m in body["methods"]}
    whole = httpx.post(server.url + "/v1/ensemble", json={**body, "stream": False}, timeout=120).json()["results"]
    for res in whole:
        m = res["method"]
        assert results[m]["answer"] == res["answer"] == alone(server, prompts, m).answer
        assert deltas[m] == (res["answer"] if m != "vote" else "")  # vote's answer comes whole, in its result


LONG = [QUESTION, f"Please answer: {QUESTION}"]  # avg decodes these to the 256-token limit (checked below)


def test_a_client_that_disconnects_frees_its_slot(server):
    ref = alone(server, LONG, "avg", tokens=256)
    assert ref.finish == "length" and len(ref.tokens) == 256
    stats = lambda: httpx.get(server.url + "/v1/stats").json()  # noqa: E731
    before = stats()
    body = {"question": LONG[0], "paraphrases": LONG[1:], "methods": ["avg"], "max_new_tokens": 256, "stream": True}
    with httpx.stream("POST", server.url + "/v1/ensemble", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if '"delta"' in line:
                break  # the first token arrived: leave
    deadline = time.monotonic() + 60
    while (now := stats())["batching"]["jobs_done"] == before["batching"]["jobs_done"]:
        assert time.monotonic() < deadline, "the engine call never ended"
        time.sleep(0.05)
    steps = now["engine"]["decode_steps"] - before["engine"]["decode_steps"]
    assert 0 < steps < 128, f"the decode ran {steps} steps after its client left"
    after = httpx.post(server.url + "/v1/ensemble", timeout=60, json={**body, "stream": False, "max_new_tokens": 4})
    assert after.status_code == 200 and after.json()["results"][0]["answer"] == alone(server, LONG, "avg", 4).answer
