"""A small batching queue: requests that arrive together share one engine call.

Every request is a job with a *key*; jobs with equal keys (same method, same generation settings)
can be answered by one ``Engine.answer_many`` call. One asyncio worker takes the oldest waiting job,
waits ``window_s`` for neighbours, gathers up to ``max_batch`` jobs with the same key (oldest
first) and runs them in the single engine thread. The engine is not thread-safe, so everything that
touches it (answers, paraphrase generation, tokenising for a mask) goes through that one thread.

Answers do not depend on batch neighbours (the engine pads rows on the left and seeds one sampler
per group), and a failing batch is re-run one job at a time, so a bad request fails alone.

Example: 3 requests for ``flex`` and 1 for ``avg`` arriving within the window, max_batch 8 →
two engine calls, batch sizes {3: 1, 1: 1}.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

RunBatch = Callable[[Hashable, list[Any]], list[Any]]


@dataclass
class _Job:
    key: Hashable
    item: Any
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Queue + one worker + one engine thread. ``run_batch(key, items) -> results`` (same order)."""

    def __init__(self, run_batch: RunBatch, max_batch: int = 8, window_s: float = 0.01):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.window_s = window_s
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selfensemble-engine")
        self._queue: asyncio.Queue[_Job] | None = None
        self._pending: deque[_Job] = deque()
        self._worker: asyncio.Task | None = None
        self.batch_sizes: Counter[int] = Counter()
        self.jobs_done = 0
        self.jobs_failed = 0
        self.retried_alone = 0

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._work(), name="selfensemble-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        # waited for off the event loop: an engine call still running (it can't be interrupted) must
        # not freeze the loop, which is still sending the replies of requests dropped at the grace limit
        await asyncio.to_thread(self.executor.shutdown, wait=True, cancel_futures=True)

    # -- public ---------------------------------------------------------------------------------
    async def submit(self, key: Hashable, item: Any) -> Any:
        """Queue one job and wait for its result (its exception is raised here)."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(key, item, future))
        return await future

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the engine thread, between batches (e.g. tokenising for a mask)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def stats(self) -> dict:
        sizes = dict(sorted(self.batch_sizes.items()))
        return {"max_batch": self.max_batch, "window_ms": self.window_s * 1000,
                "engine_calls": sum(sizes.values()), "batch_sizes": {str(k): v for k, v in sizes.items()},
                "largest_batch": max(sizes, default=0), "jobs_done": self.jobs_done,
                "jobs_failed": self.jobs_failed, "retried_alone": self.retried_alone,
                "queued": len(self._pending) + (self._queue.qsize() if self._queue else 0)}

    # -- worker ---------------------------------------------------------------------------------
    def _drain(self) -> None:
        while self._queue is not None and not self._queue.empty():
            self._pending.append(self._queue.get_nowait())

    def _take_batch(self) -> list[_Job]:
        """Up to max_batch waiting jobs with the oldest job's key, oldest first; the rest keep their order."""
        key = self._pending[0].key
        batch, rest = [], deque()
        while self._pending:
            job = self._pending.popleft()
            (batch if job.key == key and len(batch) < self.max_batch else rest).append(job)
        self._pending = rest
        return [j for j in batch if not j.future.done()]  # a client that went away is not computed

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            if not self._pending:
                self._pending.append(await self._queue.get())
                if self.window_s > 0 and self.max_batch > 1:
                    await asyncio.sleep(self.window_s)
            self._drain()
            batch = self._take_batch()
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        items = [j.item for j in batch]
        try:
            results = await loop.run_in_executor(self.executor, self.run_batch, batch[0].key, items)
            self.batch_sizes[len(batch)] += 1
        except Exception as err:
            if len(batch) == 1:
                self.batch_sizes[1] += 1
                self._fail(batch[0], err)
                return
            self.retried_alone += len(batch)  # one bad request must not fail its neighbours
            for job in batch:
                await self._run([job])
            return
        for job, result in zip(batch, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)
            self.jobs_done += 1

    def _fail(self, job: _Job, err: Exception) -> None:
        self.jobs_failed += 1
        if not job.future.done():
            job.future.set_exception(err)
