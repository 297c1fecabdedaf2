"""A question as the engine takes it (Query) and what comes back (Answer), and a query's weights checked.

A Query holds the original question and its paraphrases, the prompt format and, for methods that
need them, one weight per prompt; an Answer holds the decoded answer with its provenance.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from selfensemble.engine.prompts import (
    PromptFormat,
    PromptParts,
    build_parts,
    build_variant_parts,
    clean_prompts,
    clean_variants,
)
from selfensemble.errors import SelfEnsembleError
from selfensemble.methods import fusion
from selfensemble.methods.registry import Rows, get_method


@dataclass
class Query:
    """One question: prompts[0] is the original, the rest paraphrases; weights (per prompt) if any.

    ``seed`` keys this query's own sampling streams (a run derives it from its seed and the item
    id); None keys them by the prompts' text. Either way each query, and each answer group within
    it, draws its own random numbers, independent of which queries share its batch.

    ``formats`` (prompt variants, engine/variants.py): one PromptFormat per prompt, each with its own
    demonstrations, surface and cue, instead of ``fmt`` for all; ``variants`` says which variant each
    prompt is (``{"format": 3, "demos": 1}``), for the run's records.
    """

    prompts: Sequence[str]
    fmt: PromptFormat = field(default_factory=PromptFormat)
    weights: Sequence[float] | str | None = None  # or "entropy" / "agreement": derived per decode step
    seed: int | None = None
    formats: Sequence[PromptFormat] | None = None
    variants: list[dict] | None = None

    @property
    def stream_key(self) -> object:
        return self.seed if self.seed is not None else tuple(self.prompts)

    def format_of(self, i: int) -> PromptFormat:
        """The format prompt i is asked in."""
        return self.formats[i] if self.formats is not None else self.fmt

    def kept_indices(self) -> list[int]:
        """The prompts the engine asks (a repeat of an earlier prompt is dropped), as build_parts keeps them."""
        if self.formats is not None:
            return clean_variants(self.formats, self.prompts)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the engine notes the duplicates when it answers
            return clean_prompts(list(self.prompts))[2]


def query_parts(tokenizer, query: Query, first_only: bool = False) -> PromptParts:
    """The query's token pieces: one format for all prompts (build_parts), or one each (build_variant_parts).

    ``first_only``: prompt 0 alone, in its own format (what ``origin`` and sampling ask).
    """
    n = 1 if first_only else len(query.prompts)
    if query.formats is None:
        return build_parts(tokenizer, query.fmt, list(query.prompts[:n]))
    return build_variant_parts(tokenizer, list(query.formats[:n]), list(query.prompts[:n]))


@dataclass
class Answer:
    answer: str
    method: str
    prompts: list[str]
    generation: str
    per_prompt: list[str] | None
    logprob: float
    tokens: list[int]
    finish: str
    attention: dict  # {"prefill": key, "decode": key}: the kernels that ran (store.provenance keys)
    prefill_tokens: int
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    # per_prompt / vote: each prompt's raw generation, answer log-prob and stop reason (vote is derivable)
    per_prompt_generation: list[str] | None = None
    per_prompt_logprob: list[float] | None = None
    per_prompt_finish: list[str] | None = None
    attention_note: str = ""  # the attention path in words, for people (may be reworded; never compared)

    @property
    def prob(self) -> float:
        """Probability of the whole answer under the fused distribution: a cheap confidence."""
        return math.exp(self.logprob)

    def to_dict(self) -> dict:
        """JSON-able record of the answer, probability included."""
        return {**self.__dict__, "prob": self.prob}


def query_weights(method: str, query: Query, parts: PromptParts) -> fusion.CheckedWeights | str | None:
    """(kept prompts,) weights, validated and normalised, or a per-step rule name the fusion resolves from the logits;
    None for a method that takes no weights. Bad weights are refused here, before any decoding."""
    if not get_method(method).needs_weights:
        return None
    if query.weights is None:
        raise SelfEnsembleError(f"Method {method} needs one weight per prompt (weights, e.g. [1, 0.5, ...]) "
                                f"or a per-step rule ({', '.join(fusion.DYNAMIC_WEIGHTS)}).", arguments=("weights",))
    if isinstance(query.weights, str):
        if get_method(method).rows is Rows.CHOSEN:
            raise SelfEnsembleError(f"Method {method} answers through the prompt with the largest weight: give one "
                                    f"number per prompt (a weights file from tune-weights), not the rule "
                                    f"{query.weights!r}.")
        if query.weights not in fusion.DYNAMIC_WEIGHTS:
            raise SelfEnsembleError(f"Unknown weights rule {query.weights!r}; use one of "
                                    f"{', '.join(fusion.DYNAMIC_WEIGHTS)} or one number per prompt.")
        return query.weights
    if len(query.weights) != len(query.prompts):
        raise SelfEnsembleError(
            f"Method {method} got {len(query.weights)} weights for {len(query.prompts)} prompts; give one per prompt."
        )
    kept = [float(query.weights[i]) for i in parts.kept_indices]  # duplicates of a prompt were dropped
    try:  # validated here, once, so the user sees it before decoding
        return fusion.check_weights(kept, len(kept))
    except ValueError as err:
        raise SelfEnsembleError(f"Method {method}: {err}.") from None


def sample_counts(n_samples: int | Sequence[int], n_queries: int) -> list[int]:
    """``n_samples`` as one count per query (``Engine.sample``'s argument: one for all, or a list)."""
    counts = [n_samples] * n_queries if isinstance(n_samples, int) else list(n_samples)
    if len(counts) != n_queries or any(n < 0 for n in counts):
        raise SelfEnsembleError(f"n_samples: one count >= 0 per query, got {counts} for {n_queries} queries")
    return counts
