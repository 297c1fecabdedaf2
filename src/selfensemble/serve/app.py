"""The HTTP API and the comparison page, around one already-loaded Engine.

Paraphrases a request leaves out are written as `run` writes them: the gated generator and on-disk
cache of adhoc.py (a candidate the gate drops is never fused).

``create_app(engine)`` builds the FastAPI app (tests inject a tiny random model; ``selfensemble
serve`` the real one). Every engine call goes through one ``Batcher`` (batching.py): concurrent
requests for the same method and generation settings share one ``Engine.answer_many`` call.

  POST /v1/ensemble          {question, paraphrases? | num_paraphrases?, methods, max_new_tokens?, …}
                             → {prompts, results: [{method, answer, prob, per_prompt, seconds, attention}]}
  POST /v1/chat/completions  OpenAI-compatible; extra body field ``selfensemble: {method, paraphrases,
                             num_paraphrases}``
  POST /v1/paraphrases       {question, num_paraphrases} → {paraphrases, notes, gate} (the page's "generate")
  GET  /v1/mask.png          ?question=…&paraphrase=…&paraphrase=…&few_shot=… → the flex mask picture
  GET  /v1/models, /v1/stats, /health, and / (the page)
Errors are JSON ``{"error": {"message", "type"}}`` (OpenAI's shape): 400 for SelfEnsembleError,
422 for a body that does not validate (malformed JSON included), 404 for an unknown model.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import tempfile
import time
import uuid
from collections.abc import Hashable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi import Query as Param
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response

from selfensemble.engine.decoding import GenerationConfig
from selfensemble.engine.engine import Engine
from selfensemble.engine.prompts import clean_prompts, default_format
from selfensemble.engine.queries import Answer, Query
from selfensemble.errors import SelfEnsembleError
from selfensemble.methods.registry import METHODS, check_method
from selfensemble.pipeline.paraphrase import one_question as adhoc
from selfensemble.serve.batching import Batcher
from selfensemble.serve.schemas import (
    DEFAULT_GENERATED,
    MAX_CHARS,
    MAX_PARAPHRASES,
    ChatRequest,
    EnsembleRequest,
    ParaphraseRequest,
    Sampling,
)

FINISH = {"eos": "stop", "newline": "stop", "stop": "stop", "length": "length"}


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def _validation_message(err: RequestValidationError) -> str:
    """Pydantic's error list as one line: 'body.question: Field required; …'."""
    parts = []
    for e in err.errors():
        if e.get("type") == "json_invalid":
            parts.append(f"malformed JSON body ({e.get('ctx', {}).get('error', 'cannot parse')} "
                         f"at character {e.get('loc', ('body', '?'))[-1]})")
            continue
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _run_batch(engine: Engine):
    """The engine-thread side of the batcher: one engine call per key."""

    def run(key: Hashable, items: list) -> list:
        kind, setting = key  # type: ignore[misc]
        if kind == "answer":
            method, gen = setting
            return engine.answer_many(items, method, gen)
        if kind == "paraphrase":  # the run's gated generator and on-disk cache (adhoc.py)
            n, seed = setting
            return adhoc.write(lambda: engine, engine.lm.spec, items, n, seed=seed)
        raise ValueError(f"unknown job kind {kind!r}")

    return run


def _gen(sampling: Sampling, max_new_tokens: int, stop: tuple[str, ...] = ()) -> GenerationConfig:
    sample = bool(sampling.temperature)
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample,
                            temperature=sampling.temperature if sample else 1.0,
                            top_p=sampling.top_p if sample else 1.0, seed=sampling.seed, stop_strings=stop)


def _result(ans: Answer) -> dict:
    """One method's answer; ``attention`` holds the kernels' keys, the sentence about them goes to notes."""
    return {"method": ans.method, "answer": ans.answer, "prob": ans.prob, "per_prompt": ans.per_prompt,
            "seconds": ans.seconds, "attention": ans.attention, "finish": ans.finish,
            "notes": [*ans.notes, f"attention: {ans.attention_note}"]}


def _mask_png(engine: Engine, prompts: list[str], few_shot: bool) -> bytes:
    """Draw the flex row plan of these prompts under the engine's layout (run in the engine thread)."""
    from selfensemble.engine.attention.maskplot import layout_row, plot_mask

    cfg = engine.config
    row = layout_row(engine.lm.tokenizer, prompts, default_format(few_shot), cfg.layout, cfg.positions)
    with tempfile.TemporaryDirectory() as tmp:
        out = plot_mask(row, Path(tmp) / "mask.png",
                        title=f"flex mask: {len(prompts)} prompts, layout={cfg.layout}, positions={cfg.positions}")
        return out.read_bytes()


class Service:
    """What the routes share: the engine, its batcher, the served model's name."""

    def __init__(self, engine: Engine, model_name: str, batcher: Batcher):
        self.engine, self.model_name, self.batcher = engine, model_name, batcher
        self.started = time.time()
        self.requests = 0

    async def written(self, question: str, n: int, seed: int) -> adhoc.Written:
        """``n`` model-written paraphrases that passed the gate `run` applies (fewer: the note says so);
        cached on disk like `run`'s, so a repeated question costs no generation."""
        return await self.batcher.submit(("paraphrase", (n, seed)), question)

    async def paraphrases(self, question: str, n: int, seed: int) -> tuple[list[str], list[str]]:
        """(written paraphrases, notes): see ``written``; n == 0 writes none."""
        if n == 0:
            return [], []
        found = await self.written(question, n, seed)
        return list(found.paraphrases), [found.note]

    async def prompts(self, question: str, given: list[str] | None, n: int | None,
                      seed: int) -> tuple[list[str], list[str]]:
        """[question, *paraphrases]: the given ones, else ``n`` generated (default DEFAULT_GENERATED)."""
        if given is not None:
            paras, notes = list(given), []
        else:
            paras, notes = await self.paraphrases(question, DEFAULT_GENERATED if n is None else n, seed)
        prompts = [question, *paras]
        clean_prompts(prompts)  # empty prompts → SelfEnsembleError (400) before any engine work
        return prompts, notes

    async def answer(self, method: str, gen: GenerationConfig, query: Query) -> Answer:
        return await self.batcher.submit(("answer", (method, gen)), query)

    def stats(self) -> dict:
        return {"model": self.model_name, "uptime_s": round(time.time() - self.started, 1),
                "requests": self.requests, "batching": self.batcher.stats(), "engine": dict(self.engine.stats),
                "attention": self.engine.attention_paths, "attention_note": self.engine.attention_note}


def create_app(engine: Engine, model_name: str | None = None, max_batch: int = 8,
               window_s: float = 0.01) -> FastAPI:
    """The API around an already-loaded engine; ``max_batch`` caps one engine call's queries."""
    name = model_name or engine.lm.spec
    service = Service(engine, name, Batcher(_run_batch(engine), max_batch, window_s))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.batcher.start()
        yield
        await service.batcher.stop()

    app = FastAPI(title="selfensemble", lifespan=lifespan)
    app.state.service = service
    _add_error_handlers(app)
    _add_routes(app, service)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SelfEnsembleError)
    async def bad_input(request: Request, err: SelfEnsembleError):
        return _error(400, str(err))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, err: RequestValidationError):
        return _error(422, _validation_message(err))

    @app.middleware("http")
    async def count(request: Request, call_next):
        app.state.service.requests += 1
        return await call_next(request)


def _add_routes(app: FastAPI, service: Service) -> None:
    engine = service.engine

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        html = importlib.resources.files("selfensemble.serve").joinpath("page/index.html").read_text("utf-8")
        return HTMLResponse(html)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", **service.stats()}

    @app.get("/v1/stats")
    async def stats() -> dict:
        return service.stats()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": service.model_name, "object": "model",
                                            "created": int(service.started), "owned_by": "selfensemble",
                                            "methods": list(METHODS)}]}

    @app.post("/v1/paraphrases")
    async def paraphrases(req: ParaphraseRequest) -> dict:
        found = await service.written(req.question, req.num_paraphrases, req.seed)
        return {"question": req.question, "paraphrases": found.paraphrases, "notes": [found.note],
                "gate": found.record}

    @app.post("/v1/ensemble")
    async def ensemble(req: EnsembleRequest) -> dict:
        for m in req.methods:
            check_method(m)
        prompts, notes = await service.prompts(req.question, req.paraphrases, req.num_paraphrases, req.seed)
        gen, fmt = _gen(req, req.max_new_tokens), default_format(req.few_shot, req.chat)
        answers = await asyncio.gather(*(service.answer(m, gen, Query(prompts, fmt, req.weights))
                                         for m in req.methods))
        return {"model": service.model_name, "prompts": answers[0].prompts, "notes": notes,
                "results": [_result(a) for a in answers]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        if req.model and req.model != service.model_name:
            return _error(404, f"The model {req.model!r} is not served here; GET /v1/models lists "
                               f"{service.model_name!r}.", "model_not_found")
        opts = req.selfensemble
        check_method(opts.method)
        question = req.question()
        prompts, notes = await service.prompts(question, opts.paraphrases, opts.num_paraphrases, req.seed)
        gen = _gen(req, req.max_completion_tokens or req.max_tokens or 16, req.stop_strings())
        ans = await service.answer(opts.method, gen, Query(prompts, default_format(opts.few_shot)))
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": service.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ans.answer},
                         "finish_reason": FINISH.get(ans.finish, "stop"), "logprobs": None}],
            "usage": {"prompt_tokens": ans.prefill_tokens, "completion_tokens": len(ans.tokens),
                      "total_tokens": ans.prefill_tokens + len(ans.tokens)},
            "selfensemble": {"method": opts.method, "prompts": ans.prompts, "per_prompt": ans.per_prompt,
                             "prob": ans.prob, "attention": ans.attention,
                             "notes": [*notes, *ans.notes, f"attention: {ans.attention_note}"]},
        }

    @app.get("/v1/mask.png", response_class=Response)
    async def mask(question: str = Param(..., min_length=1, max_length=MAX_CHARS),
                   paraphrase: list[str] = Param([], max_length=MAX_PARAPHRASES),
                   few_shot: bool = True) -> Response:
        prompts = [question, *paraphrase]
        clean_prompts(prompts)
        png = await service.batcher.call(_mask_png, engine, prompts, few_shot)
        return Response(png, media_type="image/png")
