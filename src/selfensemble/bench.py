"""Benchmark: what fusing N paraphrases costs next to answering the original question once.

Sections of one run (``run_benchmark``), all on the same loaded model and the same questions:

  engine     s/question for every method × N × batch size × layout, after a warm-up pass (so
             compile time is reported apart), plus an HF ``generate`` row as the outside reference
  naive      the full-recompute reference decoder (no KV cache) for avg and flex: the cost the
             cached engine exists to avoid
  prefix     prefill tokens per question with the shared prefix's KV reused, with the prefix
             repeated per paraphrase (flex layout "full"), and with reuse switched off
  storm      flex over ~100 questions of varying length: how many graphs dynamo compiles
  batching   questions/s at the largest batch size ÷ at batch 1
  targets    the project's speed targets, each met / missed with the measured number

Heavy imports (torch, transformers) happen inside functions so that ``selfensemble --help``
stays fast. The command lives in ``selfensemble.cli.bench``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfensemble import defaults
from selfensemble.errors import SelfEnsembleError

if TYPE_CHECKING:
    from selfensemble.methods import Query
    from selfensemble.models import LoadedModel
    from selfensemble.prompts import PromptFormat

# Paraphrases by template: their quality does not matter for timing, their length variety does.
PARAPHRASE_TEMPLATES = (
    "Question: {q}",
    "Please answer: {q}",
    "I wonder, {q}",
    "Tell me: {q}",
    "Can you tell me {q}",
    "Quick trivia question for you: {q}",
    "Here is something I have always wanted to know: {q}",
    "{q} Answer in a few words.",
    "Do you happen to know {q}",
    "Help me with this one, please. {q}",
    "My friend asked me this and I was not sure: {q}",
)
MAX_N = len(PARAPHRASE_TEMPLATES) + 1

# Used when the shared WebQuestions folder is absent (e.g. CI on a fresh clone).
FALLBACK_QUESTIONS = (
    "what is the capital of france?", "who wrote the novel moby dick?", "what language is spoken in brazil?",
    "which planet is known as the red planet?", "who painted the mona lisa?",
    "what is the largest ocean on earth?", "in which country is the city of kyoto?",
    "who was the first president of the united states?", "what is the chemical symbol for gold?",
    "how many legs does a spider have?", "what currency is used in japan?",
    "which river flows through cairo?", "who discovered penicillin?",
    "what is the tallest mountain in the world?", "what instrument did jimi hendrix play?",
    "where did the olympic games begin?", "what is the main ingredient of guacamole?",
    "who developed the theory of relativity?", "what sport does serena williams play?",
    "which continent is kenya in?",
)
FALLBACK_EXAMPLES = (
    ("what is the capital of germany?", "Berlin"), ("who wrote the play hamlet?", "William Shakespeare"),
    ("what language do people speak in mexico?", "Spanish"), ("which planet is closest to the sun?", "Mercury"),
    ("who invented the telephone?", "Alexander Graham Bell"),
)
INSTRUCTION = "Answer the question in a few words."

# The project's speed targets: (label, method, layout, limit on s/q ÷ origin s/q).
RATIO_TARGETS = (("flex (shared layout)", "flex", "shared", 1.3), ("logit avg", "avg", None, 1.6),
                 ("flex (full layout)", "flex", "full", 2.0))
NAIVE_SPEEDUP_TARGET = 10.0
BATCH_SPEEDUP_TARGET = 1.5
STORM_COMPILE_TARGET = 3


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run. Defaults are the quick CPU setting on the embedded model."""

    model: str = "smollm2-135m"
    methods: tuple[str, ...] = ("origin", "avg", "flex")
    ns: tuple[int, ...] = (5,)
    batch_sizes: tuple[int, ...] = (1, 8)
    layouts: tuple[str, ...] = ("shared", "full")
    positions: str = defaults.FLEX_POSITIONS  # flex knobs (layouts above); other methods ignore them
    rescale: bool = defaults.FLEX_RESCALE
    fusion_temperature: float = defaults.FLEX_TEMPERATURE
    fusion_scale: float = defaults.FLEX_SCALE
    questions: int = 8
    max_new_tokens: int = 10
    attention: str | None = None
    naive: bool = True
    naive_questions: int = 2
    hf_reference: bool = True
    prefix_section: bool = True
    storm_questions: int = 100
    storm_new_tokens: int = 1
    storm_pad_multiples: tuple[int, ...] = (32, 64, 128)
    warmup_questions: int = 2
    few_shot: int = 5
    pad_multiple: int = 32
    compile_flex: bool = True
    device: str = "cpu"
    dtype: str = "auto"
    seed: int = 0
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    data_dir: str | None = None  # None: selfensemble.data.default_data_dir(), else built-in questions

    def __post_init__(self):
        from selfensemble.methods import ATTENTION, LAYOUTS, check_method

        for m in self.methods:
            check_method(m)
        for lay in self.layouts:
            if lay not in LAYOUTS:
                raise SelfEnsembleError(f"Unknown layout {lay!r}; use one of {', '.join(LAYOUTS)}.")
        if self.attention is not None and self.attention not in ATTENTION:
            raise SelfEnsembleError(f"Unknown attention {self.attention!r}; use one of {', '.join(ATTENTION)}.")
        if not self.ns or any(n < 1 or n > MAX_N for n in self.ns):
            raise SelfEnsembleError(f"Every N must be between 1 and {MAX_N} (template paraphrases), got {self.ns}.")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise SelfEnsembleError(f"Batch sizes must be >= 1, got {self.batch_sizes}.")
        for name in ("questions", "max_new_tokens", "storm_new_tokens", "warmup_questions", "pad_multiple"):
            if getattr(self, name) < 1:
                raise SelfEnsembleError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.threads is not None and self.threads < 1:
            raise SelfEnsembleError(f"threads must be >= 1, got {self.threads}.")
        if self.naive_questions < 0 or self.storm_questions < 0 or self.few_shot < 0:
            raise SelfEnsembleError("naive_questions, storm_questions and few_shot must be >= 0.")

    @classmethod
    def tiny(cls, **overrides: Any) -> BenchConfig:
        """What CI runs: a random 2-layer llama, 2 questions, N=2, 2 new tokens, a short storm."""
        base = dict(model="random:llama", questions=2, ns=(2,), max_new_tokens=2, naive_questions=2,
                    storm_questions=10, warmup_questions=1)
        return cls(**{**base, **overrides})

    @property
    def target_n(self) -> int:
        """The N the targets are judged at: 5 (the issue's setting) when run, else the largest N."""
        return 5 if 5 in self.ns else max(self.ns)


# -- questions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuestionSet:
    """Questions to ask, the prompt format around them, and where they came from."""

    questions: list[str]
    fmt: PromptFormat
    source: str


def _read_questions(path: Path, limit: int) -> list[tuple[str, str]]:
    """(question, first answer) pairs from a WebQuestions-style jsonl file."""
    pairs = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if len(pairs) >= limit:
                break
            if line.strip():
                rec = json.loads(line)
                pairs.append((str(rec["question"]).strip(), str((rec.get("answers") or [""])[0])))
    return pairs


def load_questions(count: int, few_shot: int = 5, data_dir: str | Path | None = None) -> QuestionSet:
    """``count`` WebQuestions test questions + ``few_shot`` train examples, else the built-in lists.

    Built-in questions are cycled when ``count`` exceeds them; ``make_queries`` rotates templates
    per index, so cycled questions still give different prompts.
    """
    from selfensemble.data.base import Example
    from selfensemble.prompts import PromptFormat

    if data_dir is None:
        from selfensemble.data import default_data_dir

        data_dir = default_data_dir()
    folder = Path(data_dir) / "webquestions" if data_dir is not None else None
    if folder is not None and (folder / "test.jsonl").is_file() and (folder / "train.jsonl").is_file():
        questions = [q for q, _ in _read_questions(folder / "test.jsonl", count)]
        shots, source = _read_questions(folder / "train.jsonl", few_shot), f"webquestions ({folder})"
    else:
        questions, shots, source = list(FALLBACK_QUESTIONS), list(FALLBACK_EXAMPLES[:few_shot]), "built-in trivia"
    questions = [questions[i % len(questions)] for i in range(count)]
    fmt = PromptFormat(instruction=INSTRUCTION, examples=tuple(Example((q,), a) for q, a in shots))
    return QuestionSet(questions, fmt, source)


def paraphrases(question: str, n: int, rotate: int = 0) -> list[str]:
    """The question plus n-1 template paraphrases; ``rotate`` varies which (and so the lengths)."""
    if not 1 <= n <= MAX_N:
        raise SelfEnsembleError(f"N must be between 1 and {MAX_N}, got {n}.")
    k = len(PARAPHRASE_TEMPLATES)
    return [question] + [PARAPHRASE_TEMPLATES[(rotate + i) % k].format(q=question) for i in range(n - 1)]


def make_queries(qs: QuestionSet, n: int, count: int | None = None) -> list[Query]:
    from selfensemble.methods import Query

    chosen = qs.questions if count is None else [qs.questions[i % len(qs.questions)] for i in range(count)]
    return [Query(paraphrases(q, n, rotate=i), qs.fmt) for i, q in enumerate(chosen)]


# -- measuring ---------------------------------------------------------------------------------
class PeakRss:
    """Peak resident memory (MB) over a block, sampled by a background thread every few ms.

    The OS keeps only a lifetime peak (ru_maxrss), which cannot tell one benchmark row from another.
    """

    def __init__(self, interval: float = 0.005):
        import psutil

        self._proc, self._interval = psutil.Process(), interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRss:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def mb(self) -> float:
        return self.peak / 2**20


@dataclass
class Timed:
    """Wall time of one call, with the dynamo compiles and peak memory it caused."""

    seconds: float
    compiles: int
    peak_rss_mb: float
    cuda_peak_mb: float | None
    value: Any = None


def timed(fn: Callable[[], Any], device: Any) -> Timed:
    """Run ``fn`` once; CUDA is synchronised on both sides so the wall time is the device's too."""
    import torch

    from selfensemble.attention import compile_count

    cuda = getattr(device, "type", str(device)) == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    c0 = compile_count()
    with PeakRss() as rss:
        t0 = time.perf_counter()
        value = fn()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    cuda_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return Timed(seconds, compile_count() - c0, rss.mb, cuda_mb, value)


def _gen(max_new_tokens: int):
    from selfensemble.decoding import GenerationConfig

    # fixed-length answers: every method decodes the same number of steps unless EOS comes first
    return GenerationConfig(max_new_tokens=max_new_tokens, stop_at_newline=False)


# -- engine rows -------------------------------------------------------------------------------
def _engine_config(config: BenchConfig, batch_size: int, layout: str = "shared", **overrides: Any):
    from selfensemble.methods import EngineConfig

    fields = dict(attention=config.attention, layout=layout, batch_size=batch_size, pad_multiple=config.pad_multiple,
                  positions=config.positions, rescale=config.rescale, fusion_temperature=config.fusion_temperature,
                  fusion_scale=config.fusion_scale)
    return EngineConfig(**{**fields, **overrides})


def engine_row(lm: LoadedModel, queries: list[Query], method: str, n: int, batch_size: int,
               layout: str | None, config: BenchConfig) -> tuple[dict, list]:
    """Warm up, then time all questions; returns the row and the answers.

    The warm-up covers at least one full batch, so the timed pass meets no batch shape the warm-up
    did not compile; compiles that still happen in the timed pass (new lengths) are counted apart.
    """
    from selfensemble.methods import Engine

    engine = Engine(lm, _engine_config(config, batch_size, layout or "shared"))
    gen = _gen(config.max_new_tokens)
    warm_q = min(max(config.warmup_questions, batch_size), len(queries))
    warm = timed(lambda: engine.answer_many(queries[:warm_q], method, gen), lm.device)
    before = dict(engine.stats)
    run = timed(lambda: engine.answer_many(queries, method, gen), lm.device)
    delta = {k: engine.stats[k] - v for k, v in before.items()}
    q = len(queries)
    s_per_q = run.seconds / q
    row = {
        "method": method, "n": n, "batch_size": batch_size, "layout": layout, "questions": q,
        "seconds": run.seconds, "s_per_q": s_per_q, "q_per_s": q / run.seconds,
        "prefill_tokens_per_q": delta["prefill_tokens"] / q,
        "prefix_tokens_encoded": engine.stats["prefix_tokens_encoded"],
        "generated_tokens": delta["generated_tokens"],
        "gen_tokens_per_s": delta["generated_tokens"] / run.seconds,
        "warmup_seconds": warm.seconds,
        # warm-up time beyond what its questions cost once warm: compilation, mostly
        "compile_seconds": max(0.0, warm.seconds - warm_q * s_per_q),
        "compiles_warmup": warm.compiles, "compiles_timed": run.compiles,
        "peak_rss_mb": max(warm.peak_rss_mb, run.peak_rss_mb), "cuda_peak_mb": run.cuda_peak_mb,
        "attention": engine.attention_note,
    }
    return row, run.value


def engine_rows(lm: LoadedModel, qs: QuestionSet, config: BenchConfig) -> tuple[list[dict], dict]:
    """The method × N × batch × layout grid; ``layout`` is None where it does not apply (not flex).

    origin ignores paraphrases, so it runs once per batch size (N=1). Answers are kept by key for
    the naive rows' agreement check.
    """
    rows, answers = [], {}
    for method in config.methods:
        for n in ((1,) if method == "origin" else config.ns):
            queries = make_queries(qs, n)
            for bs in config.batch_sizes:
                for layout in (config.layouts if method == "flex" else (None,)):
                    row, ans = engine_row(lm, queries, method, n, bs, layout, config)
                    rows.append(row)
                    answers[(method, n, bs, layout)] = ans
                    _progress(f"{method:7s} N={n:<2d} batch={bs:<2d} layout={layout or '-':6s} "
                              f"{row['s_per_q']:.3f} s/q, compiles {row['compiles_warmup']}/{row['compiles_timed']}")
    return rows, answers


def hf_generate_row(lm: LoadedModel, qs: QuestionSet, config: BenchConfig) -> dict:
    """``model.generate`` on each original question alone, batch 1: the outside 1.0× reference.

    Our models run under the 'selfensemble' attention, which insists on explicit masks; generate
    builds its own, so it runs under SDPA and the implementation is restored afterwards.
    """
    import torch

    from selfensemble.attention import ATTN_IMPLEMENTATION
    from selfensemble.prompts import build_parts

    ids = [build_parts(lm.tokenizer, qs.fmt, [q]).full(0) for q in qs.questions]
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id

    def generate(tokens: list[int]) -> int:
        x = torch.tensor([tokens], device=lm.device)
        out = lm.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=config.max_new_tokens,
                                do_sample=False, pad_token_id=pad)
        return out.shape[1] - x.shape[1]

    lm.model.set_attn_implementation("sdpa")
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            timed(lambda: generate(ids[0]), lm.device)
            run = timed(lambda: sum(generate(t) for t in ids), lm.device)
    finally:
        lm.model.set_attn_implementation(ATTN_IMPLEMENTATION)
    q = len(ids)
    return {"method": "hf_generate", "n": 1, "batch_size": 1, "layout": None, "questions": q,
            "seconds": run.seconds, "s_per_q": run.seconds / q, "q_per_s": q / run.seconds,
            "prefill_tokens_per_q": sum(map(len, ids)) / q, "prefix_tokens_encoded": 0,
            "generated_tokens": run.value, "gen_tokens_per_s": run.value / run.seconds,
            "warmup_seconds": None, "compile_seconds": None, "compiles_warmup": 0, "compiles_timed": run.compiles,
            "peak_rss_mb": run.peak_rss_mb, "cuda_peak_mb": run.cuda_peak_mb, "attention": "sdpa (HF generate)"}


def add_ratios(rows: list[dict]) -> None:
    """× origin (same batch size, same run) and × HF generate, on every row, in place."""
    origin = {r["batch_size"]: r["s_per_q"] for r in rows if r["method"] == "origin"}
    hf = next((r["s_per_q"] for r in rows if r["method"] == "hf_generate"), None)
    for r in rows:
        base = origin.get(r["batch_size"])
        r["ratio_vs_origin"] = r["s_per_q"] / base if base and r["method"] != "hf_generate" else None
        r["ratio_vs_hf"] = r["s_per_q"] / hf if hf else None


# -- naive full-recompute rows -------------------------------------------------------------------
def naive_row(lm: LoadedModel, queries: list[Query], method: str, n: int, config: BenchConfig,
              cached: dict | None, cached_answers: list | None) -> dict:
    """Time ``reference_generate`` (every step recomputes every row from scratch) on a few questions."""
    from selfensemble import fusion
    from selfensemble.methods import _plan
    from selfensemble.prompts import build_parts
    from selfensemble.reference import reference_generate

    fuse = fusion.FUSIONS.get(method, fusion.identity)
    plans = [_plan(method, build_parts(lm.tokenizer, q.fmt, list(q.prompts)), None, _engine_config(config, 1), False)
             for q in queries]

    def run_all(max_new: int) -> list[list[int]]:
        return [reference_generate(lm.model, p.rows, fuse, max_new, lm.eos_token_ids) for p in plans]

    timed(lambda: run_all(1), lm.device)  # warm-up: allocator, kernels
    run = timed(lambda: run_all(config.max_new_tokens), lm.device)
    q = len(queries)
    generated = sum(len(t) for t in run.value)
    row = {"method": method, "n": n, "questions": q, "s_per_q": run.seconds / q,
           "gen_tokens_per_s": generated / run.seconds if run.seconds else None,
           "prompt_tokens_per_q": sum(len(r.tokens) for p in plans for r in p.rows) / q,
           "cached_s_per_q": cached["s_per_q"] if cached else None, "speedup": None, "agree": None}
    if cached:
        row["speedup"] = row["s_per_q"] / cached["s_per_q"]
    knobs = _engine_config(config, 1).attention_fusion.active
    if cached_answers is not None and not (method == "flex" and knobs):  # the reference has no fusion knobs
        row["agree"] = sum(a.tokens == t for a, t in zip(cached_answers, run.value, strict=False))
    return row


def naive_rows(lm: LoadedModel, qs: QuestionSet, config: BenchConfig, rows: list[dict],
               answers: dict) -> list[dict]:
    """avg and flex (shared layout) against their cached batch-1 engine rows, for every N."""
    out = []
    count = min(config.naive_questions, len(qs.questions))
    for method in (m for m in ("avg", "flex") if m in config.methods):
        for n in config.ns:
            layout = "shared" if method == "flex" else None
            cached = next((r for r in rows if (r["method"], r["n"], r["batch_size"], r["layout"])
                           == (method, n, 1, layout)), None)
            got = answers.get((method, n, 1, layout))
            out.append(naive_row(lm, make_queries(qs, n)[:count], method, n, config, cached,
                                 got[:count] if got else None))
            _progress(f"naive {method} N={n}: {out[-1]['s_per_q']:.2f} s/q")
    return out


# -- prefix KV reuse -----------------------------------------------------------------------------
PREFIX_SETTINGS = (  # (method, layout, reuse_prefix)
    ("origin", None, True), ("origin", None, False),
    ("avg", None, True), ("avg", None, False),
    ("flex", "shared", True), ("flex", "shared", False), ("flex", "full", True), ("flex", "full", False),
)


def prefix_rows(lm: LoadedModel, qs: QuestionSet, config: BenchConfig) -> list[dict]:
    """Prefill tokens per question and time to the first token, with and without prefix KV reuse.

    One new token only: this section is about prefill. ``prefix_tokens_once`` is the shared
    instruction + few-shot prefix, encoded once per engine and reused by every row and question.
    """
    from selfensemble.methods import Engine

    n = config.target_n
    queries = make_queries(qs, n)
    gen = _gen(1)
    out = []
    for method, layout, reuse in PREFIX_SETTINGS:
        if method not in config.methods:
            continue
        # restart positions: the full layout's per-paraphrase prefix copies share one encoding only then
        engine = Engine(lm, _engine_config(config, 1, layout or "shared", reuse_prefix=reuse, positions="restart"))
        engine.answer_many(queries[:1], method, gen)  # warm-up; encodes the prefix if reused
        before = engine.stats["prefill_tokens"]
        run = timed(lambda e=engine, m=method: e.answer_many(queries, m, gen), lm.device)
        q = len(queries)
        row_tokens = (engine.stats["prefill_tokens"] - before) / q
        once = engine.stats["prefix_tokens_encoded"]
        out.append({"method": method, "layout": layout, "reuse_prefix": reuse, "n": n, "questions": q,
                    "row_prefill_tokens_per_q": row_tokens, "prefix_tokens_once": once,
                    "amortised_prefill_tokens_per_q": row_tokens + once / q,
                    "first_token_s_per_q": run.seconds / q, "compiles": run.compiles})
    return out


# -- compile storm -------------------------------------------------------------------------------
def storm_run(lm: LoadedModel, queries: list[Query], pad_multiple: int, config: BenchConfig) -> dict:
    """flex, shared layout, batch 1 over all ``queries`` from a clean dynamo state; counts compiles.

    The engine's own availability probe compiles once on creation; that is counted apart so the
    number reported is what the questions themselves cost.
    """
    import torch

    from selfensemble.methods import Engine
    from selfensemble.prompts import build_parts

    if config.compile_flex:
        torch._dynamo.reset()  # as if a fresh process: earlier sections' graphs do not count
    probe = timed(lambda: Engine(lm, replace(_engine_config(config, 1), pad_multiple=pad_multiple)), lm.device)
    engine = probe.value
    run = timed(lambda: engine.answer_many(queries, "flex", _gen(config.storm_new_tokens)), lm.device)
    lengths = set()
    for q in queries:
        parts = build_parts(lm.tokenizer, q.fmt, list(q.prompts))
        row_len = sum(map(len, parts.segments)) + len(parts.cue)
        lengths.add(row_len)
    padded = {-(-x // pad_multiple) * pad_multiple for x in lengths}
    return {"pad_multiple": pad_multiple, "questions": len(queries), "new_tokens": config.storm_new_tokens,
            "compiles": run.compiles, "probe_compiles": probe.compiles, "seconds": run.seconds,
            "s_per_q": run.seconds / len(queries), "distinct_lengths": len(lengths),
            "distinct_padded_lengths": len(padded), "attention": engine.attention_note}


def storm_section(lm: LoadedModel, qs: QuestionSet, config: BenchConfig) -> dict:
    """Run the storm with the configured pad multiple; if it compiles too often, sweep others."""
    if "flex" not in config.methods or config.storm_questions == 0:
        return {"runs": [], "recommended_pad_multiple": None}
    queries = make_queries(qs, config.target_n, config.storm_questions)
    runs = [storm_run(lm, queries, config.pad_multiple, config)]
    _progress(f"storm pad={config.pad_multiple}: {runs[0]['compiles']} compiles")
    if runs[0]["compiles"] > STORM_COMPILE_TARGET:
        for m in config.storm_pad_multiples:
            if m != config.pad_multiple:
                runs.append(storm_run(lm, queries, m, config))
                _progress(f"storm pad={m}: {runs[-1]['compiles']} compiles")
    best = min(runs, key=lambda r: (r["compiles"], r["s_per_q"]))
    return {"runs": runs, "recommended_pad_multiple": best["pad_multiple"], "compile_flex": config.compile_flex}


# -- batching and targets ------------------------------------------------------------------------
def batching_rows(rows: list[dict]) -> list[dict]:
    """questions/s at each larger batch size ÷ at batch 1, per method, N and layout."""
    one = {(r["method"], r["n"], r["layout"]): r for r in rows if r["batch_size"] == 1}
    out = []
    for r in rows:
        base = one.get((r["method"], r["n"], r["layout"]))
        if r["batch_size"] > 1 and base and r["method"] != "hf_generate":
            out.append({"method": r["method"], "n": r["n"], "layout": r["layout"], "batch_size": r["batch_size"],
                        "q_per_s": r["q_per_s"], "q_per_s_batch1": base["q_per_s"],
                        "speedup": r["q_per_s"] / base["q_per_s"]})
    return out


def _target(name: str, value: float | None, limit: float, at_most: bool, unit: str = "×") -> dict:
    if value is None:
        return {"target": name, "value": None, "limit": limit, "measured": "-", "status": "not measured"}
    met = value <= limit if at_most else value >= limit
    shown = f"{value:.0f}" if unit == "" else f"{value:.2f}{unit}"
    return {"target": name, "value": value, "limit": limit, "measured": shown, "status": "met" if met else "missed"}


def targets(result: dict, config: BenchConfig) -> list[dict]:
    """Each project target as met / missed / not measured, with the number that decided it."""
    n, rows, out = config.target_n, result["rows"], []
    for bs in config.batch_sizes:
        for label, method, layout, limit in RATIO_TARGETS:
            r = next((r for r in rows if (r["method"], r["n"], r["batch_size"], r["layout"])
                      == (method, n, bs, layout)), None)
            out.append(_target(f"{label} s/q ≤ {limit}× origin (N={n}, batch {bs})",
                               r["ratio_vs_origin"] if r else None, limit, at_most=True))
    for r in result["naive"]:
        out.append(_target(f"{r['method']} cached ≥ {NAIVE_SPEEDUP_TARGET:.0f}× faster than naive (N={r['n']})",
                           r["speedup"], NAIVE_SPEEDUP_TARGET, at_most=False))
    for r in result["batching"]:
        if r["n"] in (n, 1):
            lay = f", {r['layout']}" if r["layout"] else ""
            out.append(_target(f"{r['method']}{lay} batch {r['batch_size']} ≥ {BATCH_SPEEDUP_TARGET}× q/s of "
                               f"batch 1 (N={r['n']})", r["speedup"], BATCH_SPEEDUP_TARGET, at_most=False))
    storm = result["storm"]["runs"]
    if storm:
        first = storm[0]
        out.append(_target(f"≤ {STORM_COMPILE_TARGET} compiles across {first['questions']} flex questions "
                           f"(pad_multiple {first['pad_multiple']})", first["compiles"], STORM_COMPILE_TARGET,
                           at_most=True, unit=""))
    return out


# -- environment and the whole run -------------------------------------------------------------
def _git_commit() -> tuple[str | None, bool | None]:
    """HEAD of the repository this package lives in, and whether the tree has local changes."""
    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head or None, dirty


def environment(lm: LoadedModel) -> dict:
    import torch
    import transformers

    commit, dirty = _git_commit()
    cuda = lm.device.type == "cuda"
    return {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "platform": platform.platform(), "device": str(lm.device),
        "device_name": torch.cuda.get_device_name(lm.device) if cuda else (platform.processor() or "cpu"),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "model": lm.spec, "dtype": str(lm.dtype).replace("torch.", ""),
        "parameters": sum(p.numel() for p in lm.model.parameters()),
        "git_commit": commit, "git_dirty": dirty,
    }


def _progress(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the table."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run_benchmark(config: BenchConfig) -> dict:
    """Run every section on one loaded model; returns a JSON-serialisable dict (see module doc)."""
    import torch

    from selfensemble import attention as attn
    from selfensemble.models import load_model
    from selfensemble.prompts import build_parts

    saved, attn.COMPILE_FLEX = attn.COMPILE_FLEX, config.compile_flex
    saved_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        t0 = time.perf_counter()
        lm = load_model(config.model, device=config.device, dtype=config.dtype, seed=config.seed)
        load_seconds = time.perf_counter() - t0
        qs = load_questions(config.questions, config.few_shot, config.data_dir)
        sample = build_parts(lm.tokenizer, qs.fmt, paraphrases(qs.questions[0], config.target_n))
        _progress(f"{lm.spec} on {lm.device} ({load_seconds:.1f} s to load); questions: {qs.source}")
        rows, answers = engine_rows(lm, qs, config)
        if config.hf_reference:
            rows.insert(0, hf_generate_row(lm, qs, config))
        add_ratios(rows)
        result: dict[str, Any] = {
            "config": asdict(config), "environment": environment(lm), "load_seconds": load_seconds,
            "questions_source": qs.source, "compile_flex": config.compile_flex,
            "prompt_tokens": {"prefix": len(sample.prefix), "first_prompt": len(sample.full(0)),
                              "segments": [len(s) for s in sample.segments]},
            "rows": rows,
            "naive": naive_rows(lm, qs, config, rows, answers) if config.naive else [],
            "prefix": prefix_rows(lm, qs, config) if config.prefix_section else [],
            "batching": batching_rows(rows),
        }
        result["storm"] = storm_section(lm, qs, config)
        result["targets"] = targets(result, config)
        return result
    finally:
        attn.COMPILE_FLEX = saved
        torch.set_num_threads(saved_threads)


# -- markdown ------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(headers: Sequence[str], lines: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_fmt(v) for v in line) + " |" for line in lines]
    return "\n".join(out)


def _engine_table(rows: list[dict]) -> str:
    headers = ("method", "N", "batch", "layout", "s/q", "× origin", "× HF", "q/s", "prefill tok/q",
               "gen tok/s", "compile s", "compiles warm/timed", "peak RSS MB", "CUDA peak MB", "attention")
    lines = [(r["method"], r["n"], r["batch_size"], r["layout"], r["s_per_q"], r["ratio_vs_origin"],
              r["ratio_vs_hf"], r["q_per_s"], round(r["prefill_tokens_per_q"], 1), round(r["gen_tokens_per_s"], 1),
              r["compile_seconds"], f"{r['compiles_warmup']}/{r['compiles_timed']}", round(r["peak_rss_mb"]),
              round(r["cuda_peak_mb"]) if r["cuda_peak_mb"] is not None else None, r["attention"])
             for r in rows]
    return _table(headers, lines)


def _load(env: dict) -> str:
    load = env.get("load_average")
    return "/".join(f"{x:.1f}" for x in load) if load else "?"


def format_table(result: dict) -> str:
    """The whole result as markdown: environment, one table per section, then the targets."""
    env, cfg = result["environment"], result["config"]
    parts = [
        "## selfensemble benchmark",
        f"{env['model']} ({env['parameters'] / 1e6:.1f} M params, {env['dtype']}) on {env['device']} "
        f"[{env['device_name']}], {env['cpu_count']} CPUs, torch {env['torch']}, transformers "
        f"{env['transformers']}, {env['torch_threads']} torch threads, load {_load(env)}, commit {(env['git_commit'] or '?')[:10]}{' (dirty)' if env['git_dirty'] else ''}",
        f"{cfg['questions']} questions ({result['questions_source']}), {cfg['max_new_tokens']} new tokens, "
        f"prefix {result['prompt_tokens']['prefix']} tokens, first prompt {result['prompt_tokens']['first_prompt']} "
        f"tokens, flex {'compiled' if result['compile_flex'] else 'eager'}",
        "", "### Engine (s/q after warm-up; × origin at the same batch size)", _engine_table(result["rows"]),
    ]
    if result["naive"]:
        parts += ["", "### Naive full recompute vs cached engine (batch 1)", _table(
            ("method", "N", "questions", "naive s/q", "cached s/q", "speed-up", "prompt tok/q", "same tokens"),
            [(r["method"], r["n"], r["questions"], r["s_per_q"], r["cached_s_per_q"], r["speedup"],
              round(r["prompt_tokens_per_q"], 1), f"{r['agree']}/{r['questions']}" if r["agree"] is not None else None)
             for r in result["naive"]])]
    if result["prefix"]:
        parts += ["", "### Prefix KV reuse (1 new token, batch 1)", _table(
            ("method", "layout", "reuse prefix", "N", "row prefill tok/q", "prefix tok (once)",
             "amortised tok/q", "first-token s/q"),
            [(r["method"], r["layout"], r["reuse_prefix"], r["n"], round(r["row_prefill_tokens_per_q"], 1),
              r["prefix_tokens_once"], round(r["amortised_prefill_tokens_per_q"], 1), r["first_token_s_per_q"])
             for r in result["prefix"]])]
    if result["storm"]["runs"]:
        parts += ["", "### Compile storm (flex, shared layout, batch 1)", _table(
            ("pad multiple", "questions", "new tok", "distinct lengths", "padded lengths", "compiles",
             "probe compiles", "s/q", "attention"),
            [(r["pad_multiple"], r["questions"], r["new_tokens"], r["distinct_lengths"], r["distinct_padded_lengths"],
              r["compiles"], r["probe_compiles"], r["s_per_q"], r["attention"]) for r in result["storm"]["runs"]])]
    if result["batching"]:
        parts += ["", "### Batching (questions/s vs batch 1)", _table(
            ("method", "N", "layout", "batch", "q/s", "q/s batch 1", "speed-up"),
            [(r["method"], r["n"], r["layout"], r["batch_size"], r["q_per_s"], r["q_per_s_batch1"], r["speedup"])
             for r in result["batching"]])]
    parts += ["", "### Targets", _table(("target", "measured", "status"),
                                        [(t["target"], t["measured"], t["status"]) for t in result["targets"]])]
    return "\n".join(parts) + "\n"


def default_ns(device: str) -> tuple[int, ...]:
    """The full sweep where it is cheap (CUDA), one realistic N where it is not (CPU)."""
    if device.startswith("cuda"):
        return (1, 3, 5, 10)
    if device == "auto":
        import torch

        return (1, 3, 5, 10) if torch.cuda.is_available() else (5,)
    return (5,)
