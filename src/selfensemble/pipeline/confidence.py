"""Per-prompt confidence: how often sampled answers agree with the greedy answer.

For each prompt: one greedy answer and k sampled answers (seeded); confidence = share of samples
whose normalised lemmas equal the greedy answer's. Weights for ``weighted_avg``/``weighted_max``
are the Laplace-smoothed share (agree + 1) / (k + 2), so no prompt gets a weight of exactly zero.
Results are cached on disk per (model, k, temperature, seed) file and, inside it, per (query's
sampling stream, prompt index, prompt, format): the samples a prompt gets depend on its query's
stream, so an entry is reused only where the same samples would be drawn again.

``query_weights`` is a run's weights phase: a per-step rule or a weights file passes through, and
sampled confidence is estimated for the queries the cache lacks, saved after every batch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from selfensemble.config.generation import GenerationConfig
from selfensemble.config.run import RunConfig
from selfensemble.errors import ConfigError
from selfensemble.pipeline.backends import Backend
from selfensemble.pipeline.paraphrase.cache import cache_dir
from selfensemble.pipeline.progress import Progress, phase
from selfensemble.pipeline.tuning import is_weights_file
from selfensemble.scoring import answer_key
from selfensemble.store import jsoncache

if TYPE_CHECKING:  # engine.queries loads torch (through methods.fusion); annotations only
    from selfensemble.engine.queries import Query


@dataclass(frozen=True)
class ConfidenceConfig:
    samples: int = 4
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 12
    seed: int = 0


@dataclass
class PromptConfidence:
    greedy: str
    samples: list[str]
    agree: int

    @property
    def confidence(self) -> float:
        return self.agree / len(self.samples) if self.samples else float("nan")

    @property
    def weight(self) -> float:
        return (self.agree + 1) / (len(self.samples) + 2)


def estimate(engine, queries: Sequence, cfg: ConfidenceConfig) -> list[list[PromptConfidence]]:
    """Per query, one PromptConfidence per prompt (1 greedy + cfg.samples sampled per_prompt passes)."""
    greedy = engine.answer_many(queries, "per_prompt", GenerationConfig(max_new_tokens=cfg.max_new_tokens))
    sampled = [engine.answer_many(queries, "per_prompt", GenerationConfig(
        max_new_tokens=cfg.max_new_tokens, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
        seed=cfg.seed + s)) for s in range(cfg.samples)]
    out = []
    for q, g in enumerate(greedy):
        per_prompt = []
        for i, answer in enumerate(g.per_prompt):
            samples = [run[q].per_prompt[i] for run in sampled]
            key = answer_key(answer)
            per_prompt.append(PromptConfidence(answer, samples, sum(1 for s in samples if key and answer_key(s) == key)))
        out.append(per_prompt)
    return out


# 2: each query samples from its own stream (run seed, item); files written by 1 keyed by prompt text
# alone and held samples from the old shared sampler, so they are not read; 3: tokens drawn by an exponential
# race (fusion.select_tokens: nucleus by partial sort, argmax of p / Exp(1) draws) instead of multinomial;
# 4: drawn on the device by inversion with one counter-based uniform per row and step (engine/sampling.py)
SAMPLER_VERSION = 4


class ConfidenceCache:
    """{hash(query stream, prompt index, prompt, format): {greedy, samples, agree}}, one JSON file per
    model and setting. ``query`` is a ``methods.Query`` (its ``stream_key``, ``prompts``, ``fmt``).

    ``put`` collects entries in memory; ``save`` appends them to the file under a lock
    (``jsoncache``), so a run saves after every batch and runs sharing the file keep each other's.
    """

    def __init__(self, model: str, cfg: ConfidenceConfig, root: Path | None = None):
        key = hashlib.sha256(json.dumps([model, cfg.__dict__, SAMPLER_VERSION], sort_keys=True).encode()).hexdigest()[:16]
        self.path = (root or cache_dir()) / "confidence" / f"{key}.json"
        self.data: dict[str, dict] = jsoncache.read(self.path, "confidence")
        self._unsaved: dict[str, dict] = {}

    @staticmethod
    def key(query, index: int) -> str:
        return hashlib.sha256(repr((query.stream_key, index, query.prompts[index], query.format_of(index))).encode()).hexdigest()[:24]

    def get(self, query, index: int) -> PromptConfidence | None:
        d = self.data.get(self.key(query, index))
        return PromptConfidence(d["greedy"], d["samples"], d["agree"]) if d else None

    def put(self, query, index: int, pc: PromptConfidence) -> None:
        entry = {"greedy": pc.greedy, "samples": pc.samples, "agree": pc.agree}
        self.data[self.key(query, index)] = self._unsaved[self.key(query, index)] = entry

    def save(self) -> None:
        """Write the entries ``put`` since the last save (a no-op when there are none)."""
        if self._unsaved:
            jsoncache.merge(self.path, self._unsaved, "confidence")
            self._unsaved = {}


def batch_size(backend: Backend) -> int:
    """Questions per saved batch of confidence samples: one engine batch per worker (one worker locally)."""
    return backend.config.batch_size * backend.workers


def query_weights(backend: Backend, cfg: RunConfig, queries: Sequence[Query],
                  progress: Progress) -> list[Sequence[float] | str | None]:
    """Per query: sampled confidence per prompt, or the name of a per-step rule (fusion.DYNAMIC_WEIGHTS)
    that the fusion derives from the logits themselves (no sampling, no extra forward passes), or the
    query's own dev-tuned weights (``cfg.weights`` a file: pipeline.build set them).

    Sampled confidence is saved to its cache after every batch of queries: a killed run resumes
    with the batches already sampled (each query samples from its own stream, so batching does
    not change its samples).
    """
    # fusion loads torch; this module is imported when the CLI starts (its `--help` stays fast)
    from selfensemble.methods.fusion import DYNAMIC_WEIGHTS

    if cfg.weights in DYNAMIC_WEIGHTS:
        return [cfg.weights for _ in queries]
    if is_weights_file(cfg.weights):  # dev-tuned: set per query from the file (build.build_queries)
        return [q.weights for q in queries]
    if cfg.weights != "confidence":
        raise ConfigError(f"Unknown weights {cfg.weights!r}; use confidence, {', '.join(DYNAMIC_WEIGHTS)}.",
                          arguments=("weights",))
    ccfg = ConfidenceConfig(samples=cfg.confidence_samples, seed=cfg.seed)
    cache = ConfidenceCache(cfg.load.model, ccfg)
    todo = [q for q in queries if any(cache.get(q, i) is None for i in range(len(q.prompts)))]
    if todo:
        size = batch_size(backend)
        progress.note(f"estimating confidence for {len(todo)} questions ({ccfg.samples} samples per prompt), "
                      f"saved every {size} → {cache.path}")
        with phase(progress, "confidence", len(queries), done=len(queries) - len(todo)):
            for lo in range(0, len(todo), size):
                batch = todo[lo: lo + size]
                for q, confs in zip(batch, estimate(backend, batch, ccfg), strict=True):
                    for i, c in enumerate(confs):
                        cache.put(q, i, c)
                cache.save()
                progress.advance(len(batch))
    return [[cache.get(q, i).weight for i in range(len(q.prompts))] for q in queries]
