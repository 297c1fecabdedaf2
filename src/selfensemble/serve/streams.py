"""Server-sent events: answers streamed as they are decoded, and the paraphrase-writing phase.

The engine thread produces text deltas (engine/streaming.TextDeltas) and writing events; a
``Relay`` hands them to the response's event loop. The OpenAI endpoints send OpenAI's chunks
(``chat.completion.chunk`` / ``text_completion``) ending with ``data: [DONE]``; while paraphrases
are written they send SSE comments (``: writing paraphrases…``), which clients ignore. ``/v1/ensemble``
sends its own events (docs/serving.md):

  event: selfensemble  {"phase": "writing paraphrases", "message": …}   while paraphrases are written
  event: prompts       {"prompts": […], "notes": […]}                    once the prompts are known
  data:                {"method": "flex", "delta": "Par"}                 as each method's answer grows
  event: result        one entry of the non-streamed ``results``          as each method ends
  data: [DONE]

A client that disconnects cancels its response: the relay's ``cancel`` flag is set, the engine
checks it once per decode step and stops that answer (its batch neighbours go on), and a request
still queued is never computed. An error after the stream began is sent as ``data: {"error": …}``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from selfensemble.engine.queries import Answer
from selfensemble.errors import SelfEnsembleError
from selfensemble.pipeline.paraphrase.writing import WritingEvent

DONE = "data: [DONE]\n\n"
WRITING = "writing paraphrases"


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event (JSON data unless a str)."""
    body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {body}\n\n"


def error_event(err: Exception) -> str:
    kind = "invalid_request_error" if isinstance(err, SelfEnsembleError) else "server_error"
    return sse({"error": {"message": str(err) if isinstance(err, SelfEnsembleError) else "internal error while "
                          f"streaming: {type(err).__name__}", "type": kind}})


@dataclass
class Finished:
    """A Relay's last item: what the followed awaitable returned."""

    value: Any


class Relay:
    """Items the engine thread makes for one streamed response, handed to the response's loop.

    ``put`` is safe from any thread; ``cancel`` is set when the client goes away (the engine reads
    it at every decode step through TextDeltas' ``cancelled``).
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancel = threading.Event()

    def put(self, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def follow(self, work: Awaitable[Any]) -> AsyncIterator[Any]:
        """The items put while ``work`` runs, in order, then ``Finished(its result)`` (its error is raised)."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                get = asyncio.ensure_future(self.queue.get())
                done, _ = await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    yield get.result()
                    continue
                get.cancel()
                while not self.queue.empty():  # the engine thread's puts reach the loop before its result
                    yield self.queue.get_nowait()
                yield Finished(task.result())
                return
        finally:
            if not task.done():  # the client left: a queued job is dropped, a running decode stops
                self.cancel.set()
                task.cancel()
                task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future) -> None:
    """Read a cancelled task's outcome, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def writing_comment(event: WritingEvent) -> str | None:
    """An SSE comment for a writing event (OpenAI clients skip comments)."""
    return f": {WRITING}… {event.message or event.kind}\n\n" if event.kind != "end" else None


def writing_event(event: WritingEvent) -> str:
    return sse({"phase": WRITING, "kind": event.kind, "message": event.message, "done": event.done,
                "total": event.total}, "selfensemble")


async def guarded(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """``chunks``, with an error after the first byte sent as an error event (the status is already 200)."""
    try:
        async for chunk in chunks:
            yield chunk
    except Exception as err:  # noqa: BLE001 - the client gets the message; the stream ends cleanly
        yield error_event(err)


class OpenAIChunks:
    """OpenAI's streaming chunk shapes for one response: chat (``delta``) or completions (``text``)."""

    def __init__(self, model: str, chat: bool):
        self.chat, self.model = chat, model
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def chunk(self, text: str | None = None, finish: str | None = None, role: bool = False, **extra) -> str:
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return sse({"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                    "created": self.created, "model": self.model, "choices": [choice], **extra})

    def usage(self, ans: Answer) -> str:
        usage = {"prompt_tokens": ans.prefill_tokens, "completion_tokens": len(ans.tokens),
                 "total_tokens": ans.prefill_tokens + len(ans.tokens)}
        return sse({"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                    "created": self.created, "model": self.model, "choices": [], "usage": usage})


async def openai_stream(chunks: OpenAIChunks, prompts: Callable[[Callable], Awaitable[tuple[list[str], list[str]]]],
                        answer: Callable[[list[str], Callable[[str], None], threading.Event], Awaitable[Answer]],
                        finish_reason: Callable[[Answer], str], details: Callable[[Answer, list[str]], dict],
                        include_usage: bool) -> AsyncIterator[str]:
    """One OpenAI streamed response: comments while paraphrases are written, the role chunk, one
    chunk per delta, the finish chunk (with the ``selfensemble`` details), usage if asked, [DONE].

    ``prompts(on_event)`` → (prompts, notes); ``answer(prompts, on_delta, cancel)`` → the Answer.
    """
    if chunks.chat:
        yield chunks.chunk(role=True)
    relay = Relay()
    found: tuple[list[str], list[str]] | None = None
    async for item in relay.follow(prompts(relay.put)):
        if isinstance(item, Finished):
            found = item.value
        elif (line := writing_comment(item)) is not None:
            yield line
    assert found is not None
    ans = None
    async for item in relay.follow(answer(found[0], relay.put, relay.cancel)):
        if isinstance(item, Finished):
            ans = item.value
        else:
            yield chunks.chunk(item)
    assert ans is not None
    yield chunks.chunk(finish=finish_reason(ans), selfensemble=details(ans, found[1]))
    if include_usage:
        yield chunks.usage(ans)
    yield DONE


async def ensemble_stream(prompts: Callable[[Callable], Awaitable[tuple[list[str], list[str]]]],
                          methods: list[str], streamable: Callable[[str], bool],
                          answer: Callable[..., Awaitable[Answer]],
                          result: Callable[[Answer], dict]) -> AsyncIterator[str]:
    """``/v1/ensemble`` streamed: writing events, the prompts, each method's deltas and result, [DONE].

    ``answer(method, prompts, on_delta, cancel)``: on_delta None for a method that cannot stream
    (vote: its result comes whole). Methods run concurrently, as in the non-streamed request.
    """
    relay = Relay()
    found: tuple[list[str], list[str]] | None = None
    async for item in relay.follow(prompts(relay.put)):
        if isinstance(item, Finished):
            found = item.value
        elif item.kind != "end":
            yield writing_event(item)
    assert found is not None
    yield sse({"prompts": found[0], "notes": found[1]}, "prompts")

    async def one(method: str) -> None:
        def send(delta: str) -> None:
            relay.put(sse({"method": method, "delta": delta}))

        ans = await answer(method, found[0], send if streamable(method) else None, relay.cancel)
        relay.put(sse(result(ans), "result"))

    async for item in relay.follow(asyncio.gather(*(one(m) for m in methods))):
        if not isinstance(item, Finished):
            yield item
    yield DONE
