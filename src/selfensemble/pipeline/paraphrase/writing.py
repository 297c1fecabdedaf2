"""Writing the paraphrases of many questions, watched and interruptible: what every entry point calls.

``write_paraphrases`` looks each question up in the shared cache (cache.py: one file per model and
writer settings, whatever the entry point or dataset) and writes only the missing ones, step by
step (writer.QuestionWriter: one step is one (round, few-shot set) of one question).

Checkpoints. After every engine call the questions it finished are saved as final entries and the
others it advanced as their state, so a kill loses at most the engine call in flight and a rerun
resumes each question at its next step. An engine call holds as many questions' steps as fit in
``PACE`` (3/4) of ``checkpoint_s`` at the seconds per candidate measured on the calls before (the
first call holds one question; never more than the backend's ``batch_size × workers`` questions), so
a save comes at least every ``checkpoint_s`` unless one question's single step takes longer (or the
machine slows down mid-call). The estimate errs long: a candidate costs less in a bigger call. Which steps
share a call never changes a question's paraphrases (each candidate has its own stream).

Progress. ``progress`` (a progress.Progress) gets the phase "paraphrasing" counted in questions,
one ``advance`` per question saved, and a detail per engine call (round, questions, candidates);
``on_event`` gets the same as ``WritingEvent`` objects (what a server forwards to a stream as
"writing paraphrases…"). Both are called from the thread that writes.

Budget. ``budget`` (WritingBudget) stops the writing before the next engine call once its seconds
are spent (one call may run past it); the questions not finished come back with what they have
(``Paraphrases.unfinished``) and keep their saved state, so the next call continues them.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from selfensemble.config.gate import GateConfig
from selfensemble.pipeline.paraphrase import writer
from selfensemble.pipeline.paraphrase.cache import ParaphraseCache
from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig, QuestionWriter
from selfensemble.pipeline.progress import Progress, as_progress, show_detail

CHECKPOINT_S = 60.0  # the longest stretch of writing between two saves (unless one step takes longer)
# Share of the checkpoint interval an engine call is sized to fill. Measured (benchmarks/README.md,
# "Paraphrase writing: pacing for checkpoints"): at 1/2 writing took 1.33x as long as unpaced calls.
PACE = 0.75


@dataclass(frozen=True)
class WritingEvent:
    """What the writer is doing, for a display or a stream.

    ``kind``: "start" (questions to write, none cached), "sampling" (an engine call begins:
    ``candidates`` for ``questions``, their ``rounds``), "question" (one question's paraphrases are
    final and saved), "end" (finished, or ``stopped`` with the reason). ``done`` / ``total``:
    questions finished so far / to write in this call. ``message``: one line for people.
    """

    kind: str
    questions: tuple[str, ...]
    done: int
    total: int
    candidates: int = 0
    rounds: tuple[int, ...] = ()
    stopped: str | None = None
    message: str = ""


@dataclass
class WritingBudget:
    """At most ``seconds`` of writing per call (checked before each engine call); ``clock`` is
    injectable so tests can make it deterministic."""

    seconds: float
    clock: Callable[[], float] = time.monotonic
    _t0: float | None = None

    def begin(self) -> None:
        self._t0 = self.clock()

    def spent(self) -> bool:
        return self._t0 is not None and self.clock() - self._t0 >= self.seconds


@dataclass
class Paraphrases:
    """What ``write_paraphrases`` returns: an entry per question ({"paraphrases", "checks", "wanted"}).

    ``unfinished``: questions whose writing the budget stopped (their entry holds what was written
    so far, judged by the gate now); ``cached`` / ``written``: questions found / finished now.
    """

    entries: dict[str, dict]
    path: Path
    cached: int = 0
    written: int = 0
    unfinished: frozenset[str] = frozenset()
    budget_s: float | None = None

    def entry(self, question: str) -> dict | None:
        return self.entries.get(question)


def write_paraphrases(engine_factory: Callable[[], object], model: str, questions: Sequence[str],
                      cfg: ParaphraseConfig, gate: GateConfig | None = None, progress=None,
                      on_event: Callable[[WritingEvent], None] | None = None, budget: WritingBudget | None = None,
                      checkpoint_s: float = CHECKPOINT_S, clock: Callable[[], float] = time.perf_counter,
                      root: Path | None = None) -> Paraphrases:
    """The entry of every question: from the cache, else written now (see the module docstring).

    ``engine_factory()`` (a Backend, or an Engine wrapped in one) is called only when a question
    is missing, so a fully cached set never loads a model. ``progress``: a progress.Progress (or a
    console: notes only); ``clock``: what times engine calls (to size them).
    """
    progress = as_progress(console=progress)
    cache = ParaphraseCache(model, cfg, root, gate)
    questions = list(dict.fromkeys(questions))  # a repeated question is written once
    missing = [q for q in questions if cache.entry(q) is None]
    if missing and cache.import_legacy(missing):
        missing = [q for q in missing if cache.entry(q) is None]
    result = Paraphrases({}, cache.path, cached=len(questions) - len(missing),
                         budget_s=budget.seconds if budget is not None else None)
    interim: dict[str, dict] = {}
    if missing:
        from selfensemble.pipeline.backends import as_backend

        writers = [QuestionWriter.start(q, cfg, gate, cache.partial(q)) for q in missing]
        engine = as_backend(engine_factory())
        report = _Reporter(progress, on_event, writers, result, cfg, checkpoint_s)
        pace = _Pace(checkpoint_s * PACE, engine.config.batch_size * engine.workers)
        if budget is not None:
            budget.begin()
        report.start()
        try:
            _schedule(engine, writers, cfg, gate, cache, report, budget, pace, clock)
        finally:
            left = [w for w in writers if not w.done]
            report.end(None if not left else "budget" if budget is not None and budget.spent() else "interrupted")
        result.written = sum(w.done for w in writers)
        result.unfinished = frozenset(w.question for w in left)
        interim = {w.question: w.entry(gate) for w in left}
    result.entries = {q: cache.entry(q) or interim[q] for q in questions}
    return result


def _schedule(engine, writers: list[QuestionWriter], cfg: ParaphraseConfig, gate: GateConfig | None,
              cache: ParaphraseCache, report: _Reporter, budget: WritingBudget | None, pace: _Pace,
              clock: Callable[[], float]) -> None:
    """Engine calls until every writer is done or the budget is spent; each call's results saved."""
    queue: deque[QuestionWriter] = deque(writers)
    active: list[QuestionWriter] = []  # started, not done: served first, oldest first
    while queue or active:
        if budget is not None and budget.spent():
            return
        batch = pace.take(active, queue)
        report.sampling(batch)
        t0 = clock()
        rows = writer.advance(engine, batch, cfg, gate)
        pace.record(rows, clock() - t0)
        cache.put_many({w.question: w.entry(gate) if w.done else {"partial": w.to_state()} for w in batch})
        active = [w for w in active if not w.done]
        for w in batch:
            if w.done:
                report.question(w, gate)


@dataclass
class _Pace:
    """How many candidates one engine call may sample so that it ends within ``target_s``."""

    target_s: float
    max_questions: int
    seconds_per_row: float | None = None  # measured (a running mean of the last calls)

    def take(self, active: list[QuestionWriter], queue: deque[QuestionWriter]) -> list[QuestionWriter]:
        """The next call's writers: started ones first, then new ones, while they fit (at least one);
        the new ones taken move from ``queue`` to ``active``."""
        limit = self._rows()
        batch: list[QuestionWriter] = []
        rows = 0
        for w in itertools.chain(active, itertools.islice(queue, self.max_questions)):
            share = w.step().candidates
            if batch and (rows + share > limit or len(batch) >= self.max_questions):
                break
            batch.append(w)
            rows += share
        active.extend(queue.popleft() for _ in range(len(batch) - len(active)))
        return batch

    def record(self, rows: int, seconds: float) -> None:
        if rows > 0:
            now = seconds / rows
            self.seconds_per_row = now if self.seconds_per_row is None else (self.seconds_per_row + now) / 2

    def _rows(self) -> float:
        if self.seconds_per_row is None:
            return 0  # the first call: one question, to measure
        if self.seconds_per_row <= 0 or math.isinf(self.target_s):
            return math.inf
        return max(1.0, math.floor(self.target_s / self.seconds_per_row))


@dataclass
class _Reporter:
    """Drives the Progress and the event callback from the scheduler's few moments."""

    progress: Progress
    on_event: Callable[[WritingEvent], None] | None
    writers: list[QuestionWriter]
    result: Paraphrases
    cfg: ParaphraseConfig
    checkpoint_s: float
    done: int = 0
    t0: float = field(default_factory=time.perf_counter)

    @property
    def total(self) -> int:
        return len(self.writers)

    def _emit(self, kind: str, questions: Sequence[str], **kw) -> None:
        if self.on_event is not None:
            self.on_event(WritingEvent(kind, tuple(questions), self.done, self.total, **kw))

    def start(self) -> None:
        resumed = sum(w.round > 0 or w.format > 0 or bool(w.pool) for w in self.writers)
        again = f", {resumed} resumed where they stopped" if resumed else ""
        self.progress.note(f"paraphrasing {self.total} questions ({self.result.cached} already cached{again}); "
                           f"each is saved when written, work in progress at least every "
                           f"{self.checkpoint_s:.0f} s → {self.result.path}")
        self.progress.start("paraphrasing", self.total, unit="questions")
        self._emit("start", [w.question for w in self.writers], message="writing paraphrases…")

    def sampling(self, batch: list[QuestionWriter]) -> None:
        rounds = Counter(w.round for w in batch)
        candidates = sum(w.step().candidates for w in batch)
        text = ", ".join(f"{'round' if r == 0 else 'top-up round'} {r + 1}/{self.cfg.attempts}: {n} question"
                         f"{'s' if n > 1 else ''}" for r, n in sorted(rounds.items())) + f"; {candidates} candidates"
        show_detail(self.progress, text)
        self._emit("sampling", [w.question for w in batch], candidates=candidates, rounds=tuple(sorted(rounds)),
                   message=f"writing paraphrases… ({text})")

    def question(self, w: QuestionWriter, gate: GateConfig | None) -> None:
        self.done += 1
        self.progress.advance(1)
        self._emit("question", [w.question], message=f"{w.kept(gate)} of {w.wanted} paraphrases kept")

    def end(self, stopped: str | None) -> None:
        self.progress.end()
        seconds = time.perf_counter() - self.t0
        if stopped == "budget":
            text = (f"paraphrase writing stopped at its budget after {seconds:.1f} s: {self.done} of {self.total} "
                    "questions written; the others continue where they stopped the next time they are asked")
        elif stopped:
            text = f"paraphrase writing stopped: {self.done} of {self.total} questions written and saved"
        else:
            text = f"paraphrased {self.total} questions in {seconds:.1f} s → {self.result.path}"
        self.progress.note(text)
        self._emit("end", [w.question for w in self.writers], stopped=stopped, message=text)
