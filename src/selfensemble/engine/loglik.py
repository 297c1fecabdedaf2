"""Teacher-forced log-likelihood of a continuation under any method (multiple-choice scoring).

Generation picks each next token from the fused distribution and feeds it back; scoring feeds a
*given* continuation instead and adds up the fused log-probability of each of its tokens. The rows,
masks, positions and prefix KV are exactly the engine's (``Engine.run_chunks`` → ``Engine.prepare``, and
decoding.prefill), as is the attention fallback, so a continuation scores what greedy generation
would have seen:

  origin        log p(c | prompt)                          one row
  avg           sum_j log mean_k p_k(c_j | prompt_k, c_<j)  N rows, fused token by token
  max, weighted_*  the same with the method's fusion rule (Method.fusion_fn)
  flex          log p(c | packed paraphrases + shared cue)  one row; continuation tokens see the
                whole row, as generated tokens do

Worked example (avg, N=2, a one-token continuation c): p_1(c)=.9, p_2(c)=.1 → log .5.
``is_greedy`` is True when every continuation token is the argmax of the fused distribution at
its step (the harness's definition, applied to the fused distribution).

Shapes: the prefill gives (B, vocab) logits for the first continuation token; the other m-1
tokens go through the model in one forward of (B, m-1) under the decode step's masks (step.py:
every non-padding key of their row plus the continuation tokens before them) → (B, m-1, vocab).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from selfensemble.engine.cache import cache_capacity
from selfensemble.engine.decoding import prefill
from selfensemble.engine.prepared import Prepared
from selfensemble.engine.prompts import PromptParts
from selfensemble.engine.step import StepMasks, decode_forward
from selfensemble.errors import SelfEnsembleError
from selfensemble.methods.group_fusion import Groups
from selfensemble.methods.registry import get_method, methods_where


@dataclass
class Scored:
    """One continuation's fused log-probability, whether greedy decoding would produce it, per token."""

    logprob: float
    is_greedy: bool
    token_logprobs: list[float]


def score_continuations(engine, parts: Sequence[PromptParts], continuations: Sequence[Sequence[int]],
                        method: str, weights: Sequence[torch.Tensor | None] | None = None) -> list[Scored]:
    """Score ``continuations[i]`` (token ids, at least one) after query ``parts[i]`` under ``method``.

    Queries are grouped by their cached prefix and run ``engine.config.batch_size`` at a time
    (``Engine.run_chunks``); a query's score never depends on its batch neighbours (padding is
    masked out). A context plus continuation longer than the model's context is refused.
    """
    spec = get_method(method)
    if not spec.scores_continuations:
        raise SelfEnsembleError(f"Method {method} gives no one next-token distribution (it answers once per "
                                f"prompt): it cannot score a continuation. Use "
                                f"{', '.join(methods_where(scores_continuations=True))}.")
    if len(parts) != len(continuations):
        raise ValueError(f"{len(parts)} queries but {len(continuations)} continuations")
    if any(len(c) == 0 for c in continuations):
        raise ValueError("every continuation needs at least one token")
    weights = list(weights) if weights is not None else [None] * len(parts)
    if spec.needs_weights and any(w is None for w in weights):
        raise SelfEnsembleError(f"Method {method} needs one weight per prompt.")
    conts = [list(c) for c in continuations]
    out: list[Scored | None] = [None] * len(parts)

    def score(prepared: Prepared, chunk: list[int]) -> list[Scored]:
        return _score_chunk(engine, method, prepared, [conts[i] for i in chunk])

    # the engine's own chunking, layout and attention fallback (a failing flex kernel under "auto"
    # falls back to SDPA exactly as answer() does)
    for chunk, scored in engine.run_chunks(method, parts, weights, [len(c) for c in conts], score):
        for i, s in zip(chunk, scored, strict=True):
            out[i] = s
    return out  # type: ignore[return-value]


def _forward_continuations(engine, prep: Prepared, conts: list[list[int]]):
    """(B, m, vocab) logits predicting each continuation token (teacher-forced, one forward after prefill);
    ``conts``: one continuation per row of ``prep``.

    Continuation token j goes where a generated answer's token j would go, under the same masks: the
    decode step's tables (step.StepMasks) read at steps 0..m-2 in one forward.
    """
    model, batch, terms = engine.lm.model, prep.batch, prep.terms
    first = prefill(model, batch, prep.cache, engine.attention, terms)  # (B, vocab)
    m = max(len(c) for c in conts)
    if m == 1:
        return first[:, None, :]
    dev = batch.input_ids.device
    ids = torch.full((len(conts), m - 1), engine.pad_id, dtype=torch.long)
    for b, c in enumerate(conts):  # right-padded: a padded slot comes after every real token
        ids[b, :len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
    steps = torch.arange(m - 1, device=dev)
    positions = batch.next_position[:, None] + steps[None, :]
    tables = StepMasks.build(batch, terms, cache_capacity(prep.cache))
    rest = decode_forward(model, ids.to(dev), positions, steps, prep.cache, tables)  # (B, m - 1, vocab)
    return torch.cat([first[:, None, :], rest], dim=1)


def _score_chunk(engine, method: str, prep: Prepared, conts: list[list[int]]) -> list[Scored]:
    """Fused scores of one prepared chunk: every query's group of rows fused at once, token by token
    (the decode loop's batched rule), one host copy for the whole chunk."""
    row_conts = [conts[q] for q, plan in enumerate(prep.plans) for _ in plan.rows]
    want = [conts[q] for q in prep.owner]  # one continuation per group
    with torch.inference_mode():
        logits = _forward_continuations(engine, prep, row_conts)  # (B, m, vocab)
        fuse = get_method(method).group_fusion_fn()
        groups = Groups.build(prep.groups, prep.group_weights, logits.device)
        fused = torch.stack([fuse(logits[:, j, :], groups) for j in range(logits.shape[1])], dim=1)  # (G, m, vocab)
        m = fused.shape[1]
        tokens = torch.tensor([c + [0] * (m - len(c)) for c in want], dtype=torch.long, device=fused.device)
        picked = fused.gather(2, tokens[..., None])[..., 0]
        greedy = fused.argmax(dim=-1) == tokens
        picked, greedy = picked.tolist(), greedy.tolist()
    return [Scored(float(sum(p[:len(c)])), all(g[:len(c)]), p[:len(c)])
            for p, g, c in zip(picked, greedy, want, strict=True)]
