"""Paraphrases written by the model itself, filtered, and screened by the gate: one question's writing as steps.

A few-shot paraphrasing prompt, sampled with temperature / top-p. A round's candidates are spread
over ``formats`` few-shot sets (so they differ in style); one **step** is one (round, set) of one
question: its prompt is prefilled once and its share of the round's candidates decode as rows from
that prefill (``Engine.sample``), many questions' steps per engine call, each candidate from its own
seeded stream (question, round, set, j), so a question's paraphrases never depend on which other
questions share its engine call. Outputs that are empty, identical to the original, duplicates, no
longer a question, or of a very different length are dropped; missing paraphrases are sampled
again in later rounds (up to ``attempts``).

``ParaphraseConfig.num_paraphrases`` is N, the prompts per question **with the original**, as
everywhere else: the writer writes N - 1 paraphrases (``wanted``).

With the gate on (gate.py) ``gate.oversample`` × as many candidates are sampled and the most
diverse of those that still ask the original question are kept, each with its verdict; only
questions the gate leaves short sample again.

``QuestionWriter`` holds one question's progress between steps (round, set, candidates kept so
far); its state is what the cache saves for a question stopped mid-way, so writing resumes at the
next step instead of starting again (writing.py schedules the steps of many questions).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeGuard

from selfensemble.config.gate import GateConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.data.base import Example
from selfensemble.engine.decoding import derive_seed
from selfensemble.engine.prompts import PromptFormat
from selfensemble.errors import ConfigError
from selfensemble.pipeline.paraphrase.gate import screen

QUESTION_PAIRS: tuple[tuple[str, str], ...] = (
    ("what country is the grand bahama island in?", "In which country is Grand Bahama Island located?"),
    ("who played luke skywalker?", "Which actor portrayed Luke Skywalker?"),
    ("what language do they speak in argentina?", "What is the main language spoken in Argentina?"),
    ("where did benjamin franklin die?", "In what place did Benjamin Franklin pass away?"),
    ("what currency does japan use?", "What is the currency of Japan?"),
    ("who is the governor of texas?", "Who currently serves as governor of Texas?"),
    ("what team does lebron james play for?", "For which team does LeBron James play?"),
    ("when did world war 2 end?", "In what year did the Second World War come to an end?"),
    ("what is the capital of canada?", "Which city is the capital of Canada?"),
    ("who wrote pride and prejudice?", "Who is the author of Pride and Prejudice?"),
    ("what did thomas edison invent?", "What inventions is Thomas Edison known for?"),
    ("where is mount kilimanjaro?", "In which country can Mount Kilimanjaro be found?"),
)
INSTRUCTION = "Rewrite the question in different words. Keep its meaning."


@dataclass(frozen=True)
class ParaphraseConfig:
    """How paraphrases are written. ``num_paraphrases``: N, prompts per question with the original
    (as ``RunConfig.num_paraphrases`` and every command's ``--num-paraphrases``): N - 1 are written."""

    num_paraphrases: int = 5
    shots: int = 4
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 40
    attempts: int = 3
    seed: int = 0
    formats: int = 3  # few-shot sets per round: a round's candidates are spread over them, several per set

    def __post_init__(self):
        if self.num_paraphrases < 2:
            raise ConfigError(
                f"ParaphraseConfig(num_paraphrases={self.num_paraphrases}): num_paraphrases counts the prompts per "
                "question, the original included, so it must be >= 2 to leave a paraphrase to write (it once "
                "counted the paraphrases besides the original: num_paraphrases=K then is K+1 now).")
        if self.attempts < 1 or self.formats < 1:
            raise ConfigError(f"ParaphraseConfig: attempts and formats must be >= 1, got {self.attempts} and "
                              f"{self.formats}.")

    @property
    def wanted(self) -> int:
        """Paraphrases written per question, besides the original: N - 1."""
        return self.num_paraphrases - 1


def paraphrase_format(index: int, cfg: ParaphraseConfig) -> PromptFormat:
    """Few-shot set number ``index``: a seeded sample of example pairs."""
    pairs = random.Random(f"{cfg.seed}:{index}").sample(QUESTION_PAIRS, min(cfg.shots, len(QUESTION_PAIRS)))
    return PromptFormat(instruction=INSTRUCTION, examples=tuple(Example((q,), p) for q, p in pairs),
                        question_template="Question: {question}\n", answer_template="Paraphrase: {answer}\n\n",
                        cue="Paraphrase:")


def acceptable(text: str, original: str) -> bool:
    """Cheap sanity filter for a small model's output: a question stays a question, of similar length."""
    words, orig = len(text.split()), max(len(original.split()), 1)
    if "[MASK]" in original and text.count("[MASK]") != 1:
        return False
    if original.rstrip().endswith("?") and not text.rstrip().endswith("?"):
        return False
    return 0.5 <= words / orig <= 2.5


def _key(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def _asks(question: str) -> bool:
    return question.rstrip().endswith("?")


def _admit(pool: list[str], candidates: Sequence[str], question: str, limit: int | None = None) -> None:
    """Append the candidates that are non-empty, acceptable, and new (not the question, not in pool)."""
    for text in candidates:
        seen = {_key(question)} | {_key(p) for p in pool}
        if (limit is None or len(pool) < limit) and _key(text) and _key(text) not in seen and acceptable(text, question):
            pool.append(text)


class Step(NamedTuple):
    """One engine-call share of a question's writing: ``candidates`` of (round, few-shot set)."""

    question: str
    round: int
    format: int
    candidates: int


def sample_step(engine, steps: Sequence[Step], cfg: ParaphraseConfig) -> list[list[str]]:
    """The raw candidates of each step (``step.candidates`` each), from one engine call per stopping rule.

    Candidate j of a step draws from stream (question, round, set, j) only, so the steps sharing a
    call never change each other's candidates. A question's candidates end at their first "?"
    (``acceptable`` wants one there and nothing after); a statement's (fill-in-the-blank) do not.
    """
    from selfensemble.engine.queries import Query

    gen = GenerationConfig(max_new_tokens=cfg.max_new_tokens, do_sample=True, temperature=cfg.temperature,
                           top_p=cfg.top_p, seed=cfg.seed)
    asks = dataclasses.replace(gen, stop_after=("?",))
    out: list[list[str]] = [[] for _ in steps]
    for kind in (asks, gen):  # split by the question alone, so no question depends on its batch
        todo = [i for i, s in enumerate(steps) if s.candidates and _asks(s.question) == (kind is asks)]
        if not todo:
            continue
        queries = [Query([steps[i].question], paraphrase_format(steps[i].round * cfg.formats + steps[i].format, cfg),
                         seed=derive_seed("paraphrase", steps[i].question, steps[i].round, steps[i].format))
                   for i in todo]
        for i, answers in zip(todo, engine.sample(queries, [steps[i].candidates for i in todo], kind), strict=True):
            out[i] = [a.answer.strip() for a in answers]
    return out


def draw_candidates(engine, questions: Sequence[str], counts: Sequence[int], rnd: int,
                    cfg: ParaphraseConfig) -> list[list[str]]:
    """``counts[i]`` raw candidates for question i in round ``rnd``, spread over ``cfg.formats`` sets
    (one ``sample_step`` call per set); per question its candidates in (set, j) order."""
    out: list[list[str]] = [[] for _ in questions]
    for f in range(cfg.formats):
        steps = [Step(q, rnd, f, c // cfg.formats + (f < c % cfg.formats)) for q, c in zip(questions, counts, strict=True)]
        for i, cands in enumerate(sample_step(engine, steps, cfg)):
            out[i] += cands
    return out


@dataclass
class QuestionWriter:
    """One question's writing between steps: which (round, set) comes next, what was kept so far.

    Gate off: round r samples as many candidates as paraphrases are still missing, the first
    ``wanted`` acceptable ones are kept. Gate on: round 0 samples ``oversample`` × wanted; after each
    round ``gate.screen`` keeps up to ``wanted`` of all acceptable candidates so far (the most
    diverse); a question left with fewer samples (wanted - kept) × oversample more, up to
    ``attempts`` rounds. Within a round nothing stops early: the gate chooses among all of its
    candidates, so each one can change the choice.
    """

    question: str
    wanted: int  # paraphrases besides the original (N - 1)
    formats: int  # few-shot sets per round
    round: int = 0
    format: int = 0
    want: int = -1  # candidates this round; -1 before the round starts
    pool: list[str] = field(default_factory=list)  # acceptable, distinct candidates so far, in sampling order
    checks: list[dict] = field(default_factory=list)  # the gate's verdicts after the last finished round
    done: bool = False

    @classmethod
    def start(cls, question: str, cfg: ParaphraseConfig, gate: GateConfig | None,
              state: dict | None = None) -> QuestionWriter:
        """A writer at its first step, or at the step ``state`` (``to_state``) saved."""
        w = cls(question, cfg.wanted, cfg.formats, **(state or {}))
        w._settle(cfg, gate)
        return w

    def to_state(self) -> dict:
        return {"round": self.round, "format": self.format, "want": self.want, "pool": list(self.pool),
                "checks": list(self.checks)}

    def kept(self, gate: GateConfig | None) -> int:
        return sum(c["kept"] for c in self.checks) if _on(gate) else len(self.pool)

    def step(self) -> Step:
        """The next step (the writer is not done)."""
        return Step(self.question, self.round, self.format, self._share(self.format))

    def absorb(self, candidates: Sequence[str], cfg: ParaphraseConfig, gate: GateConfig | None) -> None:
        """Take the next step's candidates and move on (a round's end runs the gate)."""
        _admit(self.pool, candidates, self.question, None if _on(gate) else self.wanted)
        self.format += 1
        self._settle(cfg, gate)

    def entry(self, gate: GateConfig | None) -> dict:
        """What the cache stores: the kept paraphrases, every candidate's verdict, how many were wanted.
        For a writer not done (stopped mid-way) the gate judges the candidates so far."""
        checks = self.checks
        if _on(gate) and not self.done and self.pool:
            checks = [v.to_dict() for v in screen(self.question, self.pool, self.wanted, gate)]
        kept = [c["paraphrase"] for c in checks if c["kept"]] if _on(gate) else self.pool[: self.wanted]
        return {"paraphrases": kept, "checks": checks, "wanted": self.wanted}

    def _share(self, f: int) -> int:
        return self.want // self.formats + (f < self.want % self.formats)

    def _settle(self, cfg: ParaphraseConfig, gate: GateConfig | None) -> None:
        """Advance past steps with nothing to sample: start rounds, end them (the gate), finish."""
        while not self.done:
            if self.want < 0:  # a round starts
                oversample = gate.oversample if _on(gate) else 1
                self.want = (self.wanted - self.kept(gate)) * oversample
                if self.want <= 0 or self.round >= cfg.attempts:
                    self.done = True
            elif self.format >= self.formats:  # a round ends
                if _on(gate) and self.pool:
                    self.checks = [v.to_dict() for v in screen(self.question, self.pool, self.wanted, gate)]
                self.round, self.format, self.want = self.round + 1, 0, -1
            elif self._share(self.format) == 0:
                self.format += 1
            else:
                return


def _on(gate: GateConfig | None) -> TypeGuard[GateConfig]:
    return gate is not None and gate.enabled


def advance(engine, writers: Sequence[QuestionWriter], cfg: ParaphraseConfig, gate: GateConfig | None) -> int:
    """One step of every writer (none done), in one engine call per stopping rule; returns the
    candidates sampled."""
    steps = [w.step() for w in writers]
    for w, cands in zip(writers, sample_step(engine, steps, cfg), strict=True):
        w.absorb(cands, cfg, gate)
    return sum(s.candidates for s in steps)


def gated_paraphrases(engine, questions: Sequence[str], cfg: ParaphraseConfig,
                      gate: GateConfig | None = None) -> list[dict]:
    """Per question {"paraphrases": [...], "checks": [verdict dicts], "wanted": N - 1}, in memory (no cache).

    Gate off (or None): the first N - 1 acceptable outputs, ``checks`` empty. Gate on: see
    ``QuestionWriter``. All questions step together (writing.py adds the cache, progress and
    checkpoints around the same steps).
    """
    writers = [QuestionWriter.start(q, cfg, gate) for q in questions]
    while live := [w for w in writers if not w.done]:
        advance(engine, live, cfg, gate)
    return [w.entry(gate) for w in writers]


def generate_paraphrases(engine, questions: Sequence[str], cfg: ParaphraseConfig) -> list[list[str]]:
    """Up to N - 1 distinct acceptable paraphrases per question (fewer if the model keeps repeating), no gate."""
    return [e["paraphrases"] for e in gated_paraphrases(engine, questions, cfg, None)]
