"""Answers as they are decoded: text deltas of the reported answer, and a way to stop one early.

The decode loop calls a hook once per step (decoding.generate's ``on_step``, after its one host
sync), with the token each answer group chose. ``TextDeltas`` turns one group's tokens into text
deltas: it decodes the answer so far and emits the new part of what is already certain, holding
back what the next tokens could still change —

- an incomplete UTF-8 character at the end (the tokenizer shows it as U+FFFD);
- trailing whitespace (the reported answer is stripped, and a newline may end it);
- a tail that could be the start of a stop string (``GenerationConfig.stop_strings``).

So the concatenated deltas equal ``Answer.answer`` exactly (the last delta, sent once the answer
is complete, is its remainder). ``stream_hook`` builds the step hook for a chunk of queries, one
``TextDeltas`` (or None) per query; a query whose ``cancelled()`` turns true is stopped at the next
step (its groups leave the decode; the others in the batch go on).

Methods that pick their reported answer only once every group is done (``vote``) cannot stream:
``check_streamable`` refuses them with a ConfigError. ``per_prompt`` streams the answer it
reports, the original question's.
"""

from __future__ import annotations

import queue
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence

from selfensemble.engine.decoding import Chosen, GenerationConfig, StepHook
from selfensemble.engine.stopping import PARTIAL, stop_text
from selfensemble.errors import ConfigError
from selfensemble.methods.registry import get_method


def check_streamable(method: str) -> None:
    """Refuse a method whose reported answer is chosen after every group ends (vote)."""
    if get_method(method).select is not None:
        raise ConfigError(f"Method {method} cannot stream: it picks its reported answer among the N per-prompt "
                          f"answers once all of them are complete. Ask it without streaming, or stream "
                          f"per_prompt (the original question's answer).")


class TextDeltas:
    """One answer's text deltas: ``push(tokens)`` after each chosen token, ``close(answer)`` at the end.

    ``on_delta(text)`` gets every non-empty delta; ``cancelled()`` (checked once per step) asks the
    decode to stop this answer. ``emitted`` is the text sent so far, always a prefix of the answer.
    """

    def __init__(self, tokenizer, gen: GenerationConfig, on_delta: Callable[[str], None],
                 cancelled: Callable[[], bool] = lambda: False):
        self.tokenizer, self.gen, self.on_delta, self.cancelled = tokenizer, gen, on_delta, cancelled
        self.tokens: list[int] = []
        self.emitted = ""

    def safe_text(self) -> str:
        """The part of the answer the tokens so far fix, whatever tokens come next."""
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True).rstrip(PARTIAL)
        cut, reason = stop_text(text, self.gen)
        if reason is None:
            cut = cut[:len(cut) - self._stop_prefix(cut)]
        return cut.strip()

    def _stop_prefix(self, text: str) -> int:
        """Length of the longest tail of ``text`` that begins a stop string (it may yet become one)."""
        longest = 0
        for s in self.gen.stop_strings:
            for k in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:k]):
                    longest = k
                    break
        return longest

    def push(self, token: int) -> None:
        self.tokens.append(token)
        self._emit(self.safe_text())

    def restart(self) -> None:
        """The decode starts over (an attention fallback re-runs the chunk): the same tokens come again."""
        self.tokens = []

    def close(self, answer: str) -> None:
        """Send the rest of the complete ``answer``."""
        if not answer.startswith(self.emitted):  # cannot happen with a tokenizer whose decode is prefix-stable
            warnings.warn(f"selfensemble: the streamed text {self.emitted!r} is not a prefix of the answer "
                          f"{answer!r} (the tokenizer rewrote decoded text); Answer.answer is the answer.",
                          RuntimeWarning, stacklevel=2)
            return
        self._emit(answer)

    def _emit(self, safe: str) -> None:
        if len(safe) > len(self.emitted) and safe.startswith(self.emitted):
            delta, self.emitted = safe[len(self.emitted):], safe
            self.on_delta(delta)


def stream_hook(streams: Sequence[TextDeltas | None], owner: Sequence[int]) -> StepHook:
    """The decode's per-step hook for one chunk: ``streams[q]`` follows query q's reported answer
    (its first group; ``owner[g]`` = the query of group g) and stops q's groups once it is cancelled."""
    first = {}
    for g, q in enumerate(owner):
        first.setdefault(q, g)
    follow = {first[q]: s for q, s in enumerate(streams) if s is not None}
    groups_of: dict[int, list[int]] = {}
    for g, q in enumerate(owner):
        groups_of.setdefault(q, []).append(g)

    def hook(step: int, chosen: list[Chosen]) -> list[int]:
        for c in chosen:
            s = follow.get(c.group)
            if s is None:
                continue
            if step == 0:
                s.restart()
            if c.token is not None:
                s.push(c.token)
        return [g for q, s in enumerate(streams) if s is not None and s.cancelled() for g in groups_of.get(q, ())]

    return hook


class _End:
    """The worker's last queue item: the Answer, or the exception the decode raised."""

    def __init__(self, answer=None, error: BaseException | None = None):
        self.answer, self.error = answer, error


class StreamedAnswer:
    """``Engine.stream``'s result: iterate it (once) for the text deltas; then ``.answer`` is the Answer.

    ``run(deltas)`` (the engine call, given this stream's TextDeltas) runs in a worker thread
    started by the first ``next``; the deltas travel through a queue. Leaving the loop early, or
    ``close()``, cancels the decode (it stops at its next step) and waits for the thread, so the
    engine is free again when this returns.
    """

    def __init__(self, run: Callable[[TextDeltas], object], tokenizer, gen: GenerationConfig):
        self.answer = None
        self._run = run
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._deltas = TextDeltas(tokenizer, gen, self._queue.put, self._stop.is_set)
        self._thread: threading.Thread | None = None
        self._iterator: Iterator[str] | None = None

    def __iter__(self) -> Iterator[str]:
        if self._iterator is None:
            self._iterator = self._iterate()
        return self._iterator

    def _work(self) -> None:
        try:
            self._queue.put(_End(answer=self._run(self._deltas)))
        except BaseException as err:  # handed to the reading thread, raised there
            self._queue.put(_End(error=err))

    def _iterate(self) -> Iterator[str]:
        self._thread = threading.Thread(target=self._work, name="selfensemble-stream", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    self.answer = item.answer
                    return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the decode at its next step (if it still runs) and wait for it."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
