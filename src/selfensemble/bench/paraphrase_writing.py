"""The paraphrase-writing section: what sampling a question's candidate paraphrases costs.

Two ways to sample the same number of candidates per question (one round, no filters, no gate):

  shared prefill     each (question, few-shot set) prompt prefilled once, its candidates decoded as
                     rows from that prefill (``Engine.sample``, what ``paraphrase.py`` does)
  one row each       every candidate its own ``origin`` query with its own few-shot set, one engine
                     call per candidate index (how paraphrases were written before)

Reported per way: s/question, candidates/s, prefill tokens per candidate (rows plus prefix
encodings), rows per engine call, and × answering: s/question ÷ the summed s/question of every
timed engine row at the same batch size (all methods of this run answering each question once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from selfensemble.bench.config import BenchConfig
from selfensemble.bench.questions import QuestionSet
from selfensemble.bench.sections import progress
from selfensemble.bench.timing import timed

if TYPE_CHECKING:
    from selfensemble.engine.models import LoadedModel


def _one_row_each(engine, questions: list[str], k: int, pcfg) -> None:
    """The per-candidate baseline: candidate i of every question is an origin query on few-shot set i."""
    from selfensemble.config.generation import GenerationConfig
    from selfensemble.engine.queries import Query
    from selfensemble.pipeline.paraphrase.writer import paraphrase_format

    for i in range(k):
        gen = GenerationConfig(max_new_tokens=pcfg.max_new_tokens, do_sample=True, temperature=pcfg.temperature,
                               top_p=pcfg.top_p, seed=pcfg.seed * 1000 + i)
        engine.answer_many([Query([q], paraphrase_format(i, pcfg)) for q in questions], "origin", gen)


def _shared_prefill(engine, questions: list[str], k: int, pcfg) -> None:
    from selfensemble.pipeline.paraphrase.writer import draw_candidates

    draw_candidates(engine, questions, [k] * len(questions), 0, pcfg)


WAYS = {"shared prefill": _shared_prefill, "one row each": _one_row_each}


def paraphrase_rows(lm: LoadedModel, qs: QuestionSet, config: BenchConfig, rows: list[dict]) -> list[dict]:
    """One row per way of sampling ``config.paraphrase_candidates`` candidates for every question."""
    from selfensemble.config.engine import EngineConfig
    from selfensemble.engine.engine import Engine
    from selfensemble.pipeline.paraphrase.writer import ParaphraseConfig

    bs = max(config.batch_sizes)
    pcfg = ParaphraseConfig(max_new_tokens=config.paraphrase_new_tokens, formats=config.paraphrase_formats,
                            seed=config.seed)
    k, q = config.paraphrase_candidates, len(qs.questions)
    answering = sum(r["s_per_q"] for r in rows if r["batch_size"] == bs and r["method"] != "hf_generate") or None
    out = []
    for way, run_way in WAYS.items():
        engine = Engine(lm, EngineConfig(attention=config.attention, batch_size=bs, pad_multiple=config.pad_multiple))
        run_way(engine, qs.questions[:min(bs, q)], 1, pcfg)  # warm-up (and the first few-shot prefixes)
        before = dict(engine.stats)
        run = timed(lambda e=engine, f=run_way: f(e, qs.questions, k, pcfg), lm.device)
        d = {key: engine.stats[key] - v for key, v in before.items()}
        cands = d["decoded_rows"]
        out.append({"way": way, "questions": q, "candidates_per_question": k, "batch_size": bs,
                    "formats": pcfg.formats if way == "shared prefill" else k, "seconds": run.seconds,
                    "s_per_q": run.seconds / q, "candidates_per_s": cands / run.seconds,
                    "prefill_tokens_per_candidate": (d["prefill_tokens"] + d["prefix_tokens_encoded"]) / cands,
                    "rows_per_call": cands / d["calls"], "engine_calls": d["calls"],
                    "generated_tokens_per_candidate": d["generated_tokens"] / cands,
                    "answering_s_per_q": answering,
                    "ratio_vs_answering": run.seconds / q / answering if answering else None})
        progress(f"paraphrase writing, {way}: {out[-1]['s_per_q']:.2f} s/q, "
                 f"{out[-1]['rows_per_call']:.1f} rows/call")
    return out
