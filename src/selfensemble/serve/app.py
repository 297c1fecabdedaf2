"""The HTTP API and the comparison page, around one already-loaded Engine.

Paraphrases a request leaves out are written as `run` writes them, into the cache every entry point
shares (one_question.py; a candidate the gate drops is never fused), and only when a requested
method asks more than the question: ``origin`` alone never waits for paraphrases. ``num_paraphrases``
is N, prompts per question with the question included (default ``DEFAULT_PROMPTS``), as every
command's ``--num-paraphrases``. A request's writing is bounded by ``paraphrase_budget_s`` (checked
before each engine call of the writer): past it the request is answered through the prompts written
so far, ``notes`` says so, and the next request for the question continues where it stopped.

``create_app(engine)`` builds the FastAPI app (tests inject a tiny random model; ``selfensemble
serve`` the real one). Every engine call goes through one ``Batcher`` (batching.py): concurrent
requests for the same method and generation settings share one ``Engine.answer_many`` call.

  POST /v1/ensemble          {question, paraphrases? | num_paraphrases?, methods, max_new_tokens?, …}
                             → {prompts, notes, results: [{method, answer, prob, per_prompt, seconds, attention}]}
  POST /v1/chat/completions  OpenAI-compatible; extra body field ``selfensemble: {method, paraphrases,
                             num_paraphrases}``
  POST /v1/completions       OpenAI's legacy completions (``prompt`` is the question), the same extra field
  POST /v1/paraphrases       {question, num_paraphrases} → {paraphrases, notes, gate, complete} (the page's "generate")
  GET  /v1/mask.png          ?question=…&paraphrase=…&paraphrase=…&few_shot=… → the flex mask picture
  GET  /v1/models, /v1/stats, /health, and / (the page)
Errors are JSON ``{"error": {"message", "type"}}`` (OpenAI's shape): 400 for SelfEnsembleError,
422 for a body that does not validate (malformed JSON included), 404 for an unknown model.
``stream: true`` on the two OpenAI endpoints and on /v1/ensemble sends server-sent events (streams.py).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Hashable
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi import Query as Param
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.engine import Engine
from selfensemble.engine.prompts import clean_prompts, default_format
from selfensemble.engine.queries import Answer, Query
from selfensemble.engine.streaming import TextDeltas, check_streamable
from selfensemble.errors import ConfigError, SelfEnsembleError
from selfensemble.methods.registry import METHODS, check_method, get_method
from selfensemble.pipeline.paraphrase import one_question as adhoc
from selfensemble.pipeline.paraphrase.writing import WritingBudget, WritingEvent
from selfensemble.pipeline.progress import NullProgress
from selfensemble.serve import streams
from selfensemble.serve.batching import Batcher
from selfensemble.serve.schemas import (
    DEFAULT_PROMPTS,
    MAX_CHARS,
    MAX_PARAPHRASES,
    ChatRequest,
    CompletionRequest,
    EnsembleRequest,
    ParaphraseRequest,
    Sampling,
)

FINISH = {"eos": "stop", "newline": "stop", "stop": "stop", "length": "length"}
# Seconds of paraphrase writing a request may wait for (serve --paraphrase-budget-s). On 2 CPU cores the
# embedded model writes one question's 12 candidates (N = 5, gate on) in ~45-60 s, so a new question
# is answered after about this long through the paraphrases written so far; on a GPU it rarely binds.
PARAPHRASE_BUDGET_S = 30.0


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


def _run_batch(engine: Engine, service: Service):
    """The engine-thread side of the batcher: one engine call per key."""

    def run(key: Hashable, items: list) -> list:
        kind, setting = key  # type: ignore[misc]
        if kind == "answer":
            method, gen = setting
            return engine.answer_many(items, method, gen)
        if kind == "stream":  # items: (query, TextDeltas); streamed requests batch together too
            method, gen = setting
            return engine.answer_many([q for q, _ in items], method, gen, streams=[d for _, d in items])
        if kind == "paraphrase":  # the run's gated writer and the shared cache (one_question.py)
            n, seed = setting
            return adhoc.write(lambda: engine, engine.lm.spec, items, n, seed=seed, progress=service.progress,
                               on_event=service.dispatch, budget=service.budget())
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
    """What the routes share: the engine, its batcher, the served model's name, how paraphrases are written.

    ``budget_s``: seconds of paraphrase writing per job (None: unbounded); ``progress``: where the
    writing is shown (the CLI: stderr, as `run` shows it); ``clock``: the budget's clock (tests).
    """

    def __init__(self, engine: Engine, model_name: str, max_batch: int = 8, window_s: float = 0.01,
                 budget_s: float | None = None, progress=None, clock=time.monotonic):
        self.engine, self.model_name = engine, model_name
        self.batcher = Batcher(_run_batch(engine, self), max_batch, window_s)
        self.budget_s, self.progress, self.clock = budget_s, progress or NullProgress(), clock
        self.started = time.time()
        self.requests = 0
        self._listeners: dict[str, list[Callable[[WritingEvent], None]]] = {}
        self._lock = threading.Lock()

    def budget(self) -> WritingBudget | None:
        return None if self.budget_s is None else WritingBudget(self.budget_s, self.clock)

    def dispatch(self, event: WritingEvent) -> None:
        """Hand a writing event to the listeners of the questions it concerns (engine thread)."""
        with self._lock:
            targets = [cb for q in event.questions for cb in self._listeners.get(q, ())]
        for cb in targets:
            cb(event)

    @contextmanager
    def listening(self, question: str, on_event: Callable[[WritingEvent], None] | None):
        """While inside, ``on_event`` hears the writing events of ``question`` (see ``prompts``)."""
        if on_event is None:
            yield
            return
        with self._lock:
            self._listeners.setdefault(question, []).append(on_event)
        try:
            yield
        finally:
            with self._lock:
                self._listeners[question].remove(on_event)
                if not self._listeners[question]:
                    del self._listeners[question]

    async def written(self, question: str, n: int, seed: int, on_event=None) -> adhoc.Written:
        """The gated paraphrases for ``n`` prompts (the question and n - 1 written; fewer: the note says
        so), from the cache every entry point shares, else written within the budget."""
        with self.listening(question, on_event):
            return await self.batcher.submit(("paraphrase", (n, seed)), question)

    async def prompts(self, question: str, given: list[str] | None, n: int | None, seed: int,
                      methods: list[str], on_event=None) -> tuple[list[str], list[str]]:
        """([question, *paraphrases], notes): the given paraphrases, else written ones for N = ``n``
        prompts (default DEFAULT_PROMPTS), but only when a method in ``methods`` asks more than the
        question.

        ``on_event(WritingEvent)`` hears this question's writing ("start" only when something is
        written: a cached question sends nothing); it is called from the engine thread, so a stream
        hands the event to its own loop (``loop.call_soon_threadsafe``).
        """
        notes: list[str] = []
        if given is not None:
            paras = list(given)
        elif all(get_method(m).asks_original_only for m in methods):
            paras = []
            if n is not None and n > 1:
                notes.append(f"no paraphrases written: {', '.join(methods)} asks the question alone, so "
                             f"num_paraphrases={n} does not apply")
        elif (n := DEFAULT_PROMPTS if n is None else n) > 1:
            found = await self.written(question, n, seed, on_event)
            paras, notes = list(found.paraphrases), [found.note]
        else:
            paras = []
        prompts = [question, *paras]
        clean_prompts(prompts)  # empty prompts → SelfEnsembleError (400) before any engine work
        return prompts, notes

    async def answer(self, method: str, gen: GenerationConfig, query: Query) -> Answer:
        return await self.batcher.submit(("answer", (method, gen)), query)

    async def answer_stream(self, method: str, gen: GenerationConfig, query: Query,
                            on_delta: Callable[[str], None] | None, cancel: threading.Event) -> Answer:
        """``answer``, with the answer's text deltas sent to ``on_delta`` (engine thread) as it is
        decoded; ``cancel`` set (the client left) stops the decode at its next step. ``on_delta``
        None: not streamed (a method that cannot stream, in /v1/ensemble)."""
        if on_delta is None:
            return await self.answer(method, gen, query)
        deltas = TextDeltas(self.engine.lm.tokenizer, gen, on_delta, cancel.is_set)
        return await self.batcher.submit(("stream", (method, gen)), (query, deltas))

    def stats(self) -> dict:
        return {"model": self.model_name, "uptime_s": round(time.time() - self.started, 1),
                "requests": self.requests, "batching": self.batcher.stats(), "engine": dict(self.engine.stats),
                "attention": self.engine.attention_paths, "attention_note": self.engine.attention_note}


def create_app(engine: Engine, model_name: str | None = None, max_batch: int = 8, window_s: float = 0.01,
               paraphrase_budget_s: float | None = PARAPHRASE_BUDGET_S, progress=None,
               clock=time.monotonic) -> FastAPI:
    """The API around an already-loaded engine; ``max_batch`` caps one engine call's queries.

    ``paraphrase_budget_s``: seconds of paraphrase writing a request may wait for (None: no bound;
    0: only cached paraphrases); ``progress``: a progress.Progress that shows the writing (default:
    none); ``clock``: the budget's clock (tests make it deterministic).
    """
    name = model_name or engine.lm.spec
    if paraphrase_budget_s is not None and paraphrase_budget_s < 0:
        raise SelfEnsembleError(f"paraphrase_budget_s must be >= 0 (or None: no bound), got {paraphrase_budget_s}.")
    service = Service(engine, name, max_batch, window_s, paraphrase_budget_s, progress, clock)

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
                "gate": found.record, "complete": found.complete}

    @app.post("/v1/ensemble")
    async def ensemble(req: EnsembleRequest):
        for m in req.methods:
            check_method(m)
        gen, fmt = _gen(req, req.max_new_tokens), default_format(req.few_shot, req.chat)

        def prompts(on_event=None):
            return service.prompts(req.question, req.paraphrases, req.num_paraphrases, req.seed, req.methods, on_event)

        if req.stream:
            def answer(method, prompts, on_delta, cancel):
                return service.answer_stream(method, gen, Query(prompts, fmt, req.weights), on_delta, cancel)

            return _sse(streams.ensemble_stream(prompts, req.methods, _streamable, answer, _result))
        found, notes = await prompts()
        answers = await asyncio.gather(*(service.answer(m, gen, Query(found, fmt, req.weights))
                                         for m in req.methods))
        return {"model": service.model_name, "prompts": answers[0].prompts, "notes": notes,
                "results": [_result(a) for a in answers]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        return await _openai(service, req, chat=True)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        return await _openai(service, req, chat=False)

    @app.get("/v1/mask.png", response_class=Response)
    async def mask(question: str = Param(..., min_length=1, max_length=MAX_CHARS),
                   paraphrase: list[str] = Param([], max_length=MAX_PARAPHRASES),
                   few_shot: bool = True) -> Response:
        prompts = [question, *paraphrase]
        clean_prompts(prompts)
        png = await service.batcher.call(_mask_png, engine, prompts, few_shot)
        return Response(png, media_type="image/png")


def _streamable(method: str) -> bool:
    return get_method(method).select is None  # vote picks its answer at the end: sent whole


def _sse(chunks) -> StreamingResponse:
    return StreamingResponse(streams.guarded(chunks), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _openai(service: Service, req: ChatRequest | CompletionRequest, chat: bool):
    """One OpenAI chat or legacy completion, whole or streamed (``req.stream``)."""
    if req.model and req.model != service.model_name:
        return _error(404, f"The model {req.model!r} is not served here; GET /v1/models lists "
                           f"{service.model_name!r}.", "model_not_found")
    if req.n != 1:
        raise ConfigError(f"n={req.n}: selfensemble serve answers once per request (n=1); send n requests "
                          "(with different seeds) for several answers.")
    opts = req.selfensemble
    check_method(opts.method)
    if req.stream:
        check_streamable(opts.method)
    question = req.question()
    gen = _gen(req, req.new_tokens(), req.stop_strings())
    fmt = default_format(opts.few_shot)

    def prompts(on_event=None):
        return service.prompts(question, opts.paraphrases, opts.num_paraphrases, req.seed, [opts.method], on_event)

    def details(ans: Answer, notes: list[str]) -> dict:
        return {"method": opts.method, "prompts": ans.prompts, "per_prompt": ans.per_prompt, "prob": ans.prob,
                "attention": ans.attention, "notes": [*notes, *ans.notes, f"attention: {ans.attention_note}"]}

    def finish(ans: Answer) -> str:
        return FINISH.get(ans.finish, "stop")

    if req.stream:
        def answer(found, on_delta, cancel):
            return service.answer_stream(opts.method, gen, Query(found, fmt), on_delta, cancel)

        return _sse(streams.openai_stream(streams.OpenAIChunks(service.model_name, chat), prompts, answer, finish,
                                          details, req.include_usage()))
    found, notes = await prompts()
    ans = await service.answer(opts.method, gen, Query(found, fmt))
    choice = ({"index": 0, "message": {"role": "assistant", "content": ans.answer}} if chat
              else {"index": 0, "text": ans.answer})
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
        "model": service.model_name, "choices": [{**choice, "finish_reason": finish(ans), "logprobs": None}],
        "usage": {"prompt_tokens": ans.prefill_tokens, "completion_tokens": len(ans.tokens),
                  "total_tokens": ans.prefill_tokens + len(ans.tokens)},
        "selfensemble": details(ans, notes),
    }
