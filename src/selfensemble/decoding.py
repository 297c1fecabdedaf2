"""The one decode loop: prefill a packed batch, then step with a KV cache.

Rows are grouped: every group decodes one shared answer. A fusion function turns the group's
(n_rows, vocab) logits into one distribution, and the chosen token is fed back to all its rows.
origin / per_prompt / flex use groups of one row; logit fusion uses one group of N rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from selfensemble import masks
from selfensemble.fusion import FusionFn, select_token
from selfensemble.packing import PackedBatch


@dataclass(frozen=True)
class GenerationConfig:
    """Greedy by default; answers stop at EOS, at a newline after some text, or at a stop string."""

    max_new_tokens: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    stop_at_newline: bool = True
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Decoded:
    """One group's answer: tokens, text up to the stop, per-token fused log-probs, why it stopped."""

    tokens: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[float] = field(default_factory=list)
    finish: str = "length"

    @property
    def logprob(self) -> float:
        return float(sum(self.logprobs))


def model_forward(model, input_ids, position_ids, mask, cache, score_mod=None, score_scale=None) -> torch.Tensor:
    """Last-position logits (B, vocab); the cache grows by input_ids' length."""
    extra = {"selfensemble_score_mod": score_mod} if score_mod is not None else {}
    if score_scale is not None:
        extra["selfensemble_score_scale"] = score_scale
    out = model(input_ids=input_ids, position_ids=position_ids, attention_mask=mask, cache=cache,
                use_cache=True, logits_to_keep=1, **extra)
    return out.logits[:, -1, :]


def prefill(model, batch: PackedBatch, cache, attention: str,
            fusion_terms: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Run the packed rows through the model under their segment mask; returns (B, vocab).

    ``fusion_terms`` = per-row (multiplier, bias) from ``masks.AttentionFusion.row_terms``; the
    flex kernel takes them as a score_mod, SDPA as a dense bias (plus a multiplier when one is != 1).
    """
    score_mod = score_scale = None
    if attention == "flex":
        mask = masks.block_mask(batch)
        if fusion_terms is not None:
            score_mod = masks.fusion_score_mod(batch.segment_ids, batch.prefix_len, *fusion_terms, batch.prefix_segments)
    elif attention == "sdpa":
        mask = masks.dense_mask(batch)
        if fusion_terms is not None:
            mult, bias = masks.dense_fusion_terms(batch, *fusion_terms)
            mask = torch.where(mask, bias, torch.tensor(float("-inf"))).to(model.dtype)
            score_scale = mult.to(model.dtype) if bool((fusion_terms[0] != 1).any()) else None
    else:
        raise ValueError(f"attention must be 'flex' or 'sdpa', got {attention!r}")
    return model_forward(model, batch.input_ids, batch.position_ids, mask, cache, score_mod, score_scale)


def _stop_text(text: str, gen: GenerationConfig) -> tuple[str, str | None]:
    """Cut the text at the first stop string, or at a newline once some text was produced."""
    cut, reason = len(text), None
    for s in gen.stop_strings:
        i = text.find(s)
        if 0 <= i < cut:
            cut, reason = i, "stop"
    if gen.stop_at_newline:
        lead = len(text) - len(text.lstrip())
        i = text.find("\n", lead)
        if 0 <= i < cut and text[:i].strip():
            cut, reason = i, "newline"
    return text[:cut], reason


def generate(model, tokenizer, batch: PackedBatch, cache, groups: Sequence[Sequence[int]], fuse: FusionFn,
             gen: GenerationConfig, *, attention: str, eos_ids: set[int],
             weights: Sequence[torch.Tensor | None] | None = None,
             fusion: masks.AttentionFusion | None = None, fused_n: Sequence[int] | None = None) -> list[Decoded]:
    """Decode one answer per group; rows of a group share every chosen token.

    ``groups`` lists row indices per group (each row in exactly one group). ``fusion`` (attention
    fusion knobs) applies to the rows whose ``fused_n`` (per row: paraphrases packed in it) is >= 2,
    with that row's own N, in prefill and in every decode step; every other row is untouched.
    """
    B = batch.shape[0]
    if sorted(r for g in groups for r in g) != list(range(B)):
        raise ValueError("every row must belong to exactly one group")
    weights = list(weights) if weights is not None else [None] * len(groups)
    terms = None
    if fusion is not None and fusion.active and fused_n is not None and max(fused_n) > 1:
        if len(fused_n) != B:
            raise ValueError(f"fused_n has {len(fused_n)} entries for {B} rows")
        terms = tuple(t.to(batch.input_ids.device) for t in fusion.row_terms(torch.tensor(list(fused_n))))
    # one generator per group, all seeded alike: a sampled answer does not depend on its batch neighbours
    generators = [torch.Generator().manual_seed(gen.seed) if gen.do_sample else None for _ in groups]
    dev = batch.input_ids.device

    logits = prefill(model, batch, cache, attention, terms)
    scale, bias = masks.decode_terms(batch, *(terms or (None, None)))
    use_scale = terms is not None and bool((terms[0] != 1).any())
    positions = batch.next_position.clone()
    out = [Decoded() for _ in groups]
    active = list(range(len(groups)))
    for step in range(gen.max_new_tokens):
        next_tokens = torch.full((B,), tokenizer.eos_token_id or 0, dtype=torch.long, device=dev)
        for g in list(active):
            rows = list(groups[g])
            logp = fuse(logits[rows], weights[g])
            token = select_token(logp, gen.do_sample, gen.temperature, gen.top_p, gen.top_k, generators[g])
            next_tokens[rows] = token
            if token in eos_ids:
                out[g].finish = "eos"
                active.remove(g)
                continue
            out[g].tokens.append(token)
            out[g].logprobs.append(float(logp[token]))
            text, reason = _stop_text(tokenizer.decode(out[g].tokens, skip_special_tokens=True), gen)
            if reason:
                out[g].finish = reason
                active.remove(g)
        if not active or step == gen.max_new_tokens - 1:
            break
        # every generated token sees the whole row (prefix, all paraphrases, cue, earlier answers)
        bias = torch.cat([bias, torch.zeros(B, 1, device=dev)], dim=1)
        scale = torch.cat([scale, torch.ones(B, 1, device=dev)], dim=1)
        mask = bias[:, None, None, :].to(model.dtype)
        logits = model_forward(model, next_tokens[:, None], positions[:, None], mask, cache,
                               score_scale=scale[:, None, None, :].to(model.dtype) if use_scale else None)
        positions = positions + 1
    for d in out:
        d.text, _ = _stop_text(tokenizer.decode(d.tokens, skip_special_tokens=True), gen)
    return out
