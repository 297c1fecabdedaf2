"""The one decode loop: prefill a packed batch, then step with a KV cache.

Rows are grouped: every group decodes one shared answer. A fusion function turns the group's
(n_rows, vocab) logits into one distribution, and the chosen token is fed back to all its rows.
origin / per_prompt / flex use groups of one row; logit fusion uses one group of N rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from selfensemble.engine.attention import masks
from selfensemble.engine.attention.dispatch import WindowMasks, flex_errors
from selfensemble.engine.packing import PackedBatch
from selfensemble.engine.stopping import TextWatch, can_stop_on_text, stop_text
from selfensemble.methods.fusion import FusionFn, check_weights, select_tokens


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
    stop_strings: tuple[str, ...] = ()  # the answer ends before the first of these (cut from the text)
    stop_after: tuple[str, ...] = ()  # the answer ends with the first of these (kept in the text)

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Decoded:
    """One group's answer: tokens, text up to the stop, per-token fused log-probs, why it stopped.

    ``tokens``/``logprobs`` hold every chosen token except EOS (a newline or stop-string token is
    kept: its text is cut from ``text``, but the token was chosen). ``stop_logprob`` is EOS's
    log-prob when EOS ended the answer, else 0.
    """

    tokens: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[float] = field(default_factory=list)
    finish: str = "length"
    stop_logprob: float = 0.0

    @property
    def logprob(self) -> float:
        """Log-probability of the answer *and its stop*: every chosen token, the stop token included,
        whatever the stop (EOS, newline, stop string); a length cut has no stop token. So ``prob``
        and ECE mean the same thing for every answer.
        """
        return float(sum(self.logprobs)) + self.stop_logprob


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from e.g. (run seed, item id, prompt index): the same in every process.

    Python's ``hash`` of a str changes per process, so a hash of the text is used instead.
    """
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def candidate_seed(stream_key: object, index: int) -> int:
    """The stream key of sample ``index`` of a query keyed ``stream_key`` (``Engine.sample``): sample j
    is exactly the ``origin`` answer of the same prompt asked with ``Query.seed = candidate_seed(key, j)``."""
    return derive_seed("sample", stream_key, index)


def model_forward(model, input_ids, position_ids, mask, cache, score_mod=None, windows=None,
                  score_scale=None) -> torch.Tensor:
    """Last-position logits (B, vocab); the cache grows by input_ids' length.

    ``windows``: an attention.WindowMasks giving the mask of sliding-window layers; ``score_scale``:
    a dense multiplier on the scores (attention fusion's temperature on the SDPA path).
    """
    extra = {"selfensemble_score_mod": score_mod} if score_mod is not None else {}
    if windows is not None:
        extra["selfensemble_windows"] = windows
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
        if fusion_terms is not None:
            score_mod = masks.fusion_score_mod(batch.segment_ids, batch.prefix_len, *fusion_terms,
                                               batch.prefix_segments)

        def flex_mask(window: int | None):
            with flex_errors():  # a failure to build the mask is a flex failure (the engine may fall back)
                return masks.block_mask(batch) if window is None else masks.block_mask(batch, window=window)

        mask, windows = flex_mask(None), WindowMasks(flex_mask)
    elif attention == "sdpa":
        bias = None
        if fusion_terms is not None:
            mult, bias = masks.dense_fusion_terms(batch, *fusion_terms)
            score_scale = mult.to(model.dtype) if bool((fusion_terms[0] != 1).any()) else None

        def dense(window: int | None):
            m = masks.dense_mask(batch, window)
            return m if bias is None else torch.where(m, bias, torch.tensor(float("-inf"))).to(model.dtype)

        mask, windows = dense(None), WindowMasks(dense)
    else:
        raise ValueError(f"attention must be 'flex' or 'sdpa', got {attention!r}")
    return model_forward(model, batch.input_ids, batch.position_ids, mask, cache, score_mod, windows, score_scale)


def _expand_rows(index: torch.Tensor, logits: torch.Tensor, batch: PackedBatch, cache,
                 terms: tuple[torch.Tensor, torch.Tensor] | None):
    """After one prefill, prefilled row index[i] becomes decoded row i: logits, KV and row tensors."""
    cache.batch_select_indices(index)
    rows = dataclasses.replace(batch, input_ids=batch.input_ids[index], segment_ids=batch.segment_ids[index],
                               position_ids=batch.position_ids[index], next_position=batch.next_position[index])
    terms = None if terms is None else tuple(t[index.to(t.device)] for t in terms)
    return logits[index], rows, terms


def generate(model, tokenizer, batch: PackedBatch, cache, groups: Sequence[Sequence[int]], fuse: FusionFn,
             gen: GenerationConfig, *, attention: str, eos_ids: set[int],
             weights: Sequence[torch.Tensor | None] | None = None,
             fusion: masks.AttentionFusion | None = None, fused_n: Sequence[int] | None = None,
             seeds: Sequence[int] | None = None, expand: torch.Tensor | None = None) -> list[Decoded]:
    """Decode one answer per group; rows of a group share every chosen token.

    ``groups`` lists row indices per group (each row in exactly one group). ``fusion`` (attention
    fusion knobs) applies to the rows whose ``fused_n`` (per row: paraphrases packed in it) is >= 2,
    with that row's own N, in prefill and in every decode step; every other row is untouched.
    ``seeds`` (one per group) seed each group's own sampling stream (default: ``gen.seed`` for every
    group), so a sampled answer depends on its own seed only, never on its batch neighbours.
    ``expand`` (B',) lists, per decoded row, the prefilled row it continues: each prompt is prefilled
    once and its KV and last logits copied to its rows (K samples of one prompt); ``groups``,
    ``weights`` and ``seeds`` then index the B' decoded rows, ``fused_n`` the prefilled ones.
    Once half the rows have stopped, they are dropped from the KV cache and the decode tensors (a
    row's result does not depend on its batch neighbours, so this only saves work).
    """
    B = batch.shape[0] if expand is None else len(expand)
    if sorted(r for g in groups for r in g) != list(range(B)):
        raise ValueError("every row must belong to exactly one group")
    weights = [None] * len(groups) if weights is None else [
        check_weights(w, len(rows), batch.input_ids.device) for w, rows in zip(weights, groups, strict=True)]
    terms = None
    if fusion is not None and fusion.active and fused_n is not None and max(fused_n) > 1:
        if len(fused_n) != batch.shape[0]:
            raise ValueError(f"fused_n has {len(fused_n)} entries for {batch.shape[0]} rows")
        terms = tuple(t.to(batch.input_ids.device) for t in fusion.row_terms(torch.tensor(list(fused_n))))
    seeds = list(seeds) if seeds is not None else [gen.seed] * len(groups)
    if len(seeds) != len(groups):
        raise ValueError(f"seeds: one per group, got {len(seeds)} for {len(groups)} groups")
    generators = [torch.Generator().manual_seed(int(s)) if gen.do_sample else None for s in seeds]
    dev = batch.input_ids.device

    logits = prefill(model, batch, cache, attention, terms)
    if expand is not None:
        logits, batch, terms = _expand_rows(expand.to(dev), logits, batch, cache, terms)
    scale, bias = masks.decode_terms(batch, *(terms or (None, None)))
    if terms is None or not bool((terms[0] != 1).any()):
        scale = None  # no fusion temperature: the decode steps need no score multiplier
    positions = batch.next_position.clone()
    key_pos = masks.key_positions(batch)  # (B, K): position of every cached key, for sliding windows
    out = [Decoded() for _ in groups]
    watches = [TextWatch(tokenizer, gen) for _ in groups] if can_stop_on_text(gen) else None
    active = list(range(len(groups)))
    where = list(range(B))  # row r of the batch is row where[r] of the tensors (finished rows get dropped)
    for step in range(gen.max_new_tokens):
        next_tokens = torch.full((len(positions),), tokenizer.eos_token_id or 0, dtype=torch.long, device=dev)
        fused = torch.stack([fuse(logits[[where[r] for r in groups[g]]], weights[g]) for g in active])
        chosen = select_tokens(fused, gen.do_sample, gen.temperature, gen.top_p, gen.top_k,
                               [generators[g] for g in active])
        picked = fused.gather(1, chosen[:, None])[:, 0].double()
        # one host sync per step for every group's token and its log-prob (float64 holds any token id exactly)
        for g, (token, lp) in zip(list(active), torch.stack((chosen.double(), picked), 1).tolist(), strict=True):
            token = int(token)
            rows = [where[r] for r in groups[g]]
            next_tokens[rows] = token
            if token in eos_ids:
                out[g].finish = "eos"
                out[g].stop_logprob = lp
                active.remove(g)
                continue
            out[g].tokens.append(token)
            out[g].logprobs.append(lp)
            reason = watches[g].push(out[g].tokens) if watches else None
            if reason:
                out[g].finish = reason
                active.remove(g)
        if not active or step == gen.max_new_tokens - 1:
            break
        live = sorted(where[r] for g in active for r in groups[g])
        if len(live) <= len(positions) // 2:  # half the rows are done: stop computing them
            keep = torch.tensor(live, device=dev)
            cache.batch_select_indices(keep)
            next_tokens, positions, bias, key_pos = (t[keep] for t in (next_tokens, positions, bias, key_pos))
            scale = None if scale is None else scale[keep]
            moved = {old: new for new, old in enumerate(live)}
            where = [moved.get(w, -1) for w in where]
        n = len(positions)
        # every generated token sees the whole row (prefix, all paraphrases, cue, earlier answers)
        bias = torch.cat([bias, torch.zeros(n, 1, device=dev)], dim=1)
        if scale is not None:
            scale = torch.cat([scale, torch.ones(n, 1, device=dev)], dim=1)
        key_pos = torch.cat([key_pos, positions[:, None]], dim=1)
        mask = bias[:, None, None, :].to(model.dtype)
        windows = WindowMasks(lambda w, b=bias, p=positions, k=key_pos:
                              masks.decode_window(b, p, k, w)[:, None, None, :].to(model.dtype))
        logits = model_forward(model, next_tokens[:, None], positions[:, None], mask, cache, windows=windows,
                               score_scale=None if scale is None else scale[:, None, None, :].to(model.dtype))
        positions = positions + 1
    for d in out:
        d.text, _ = stop_text(tokenizer.decode(d.tokens, skip_special_tokens=True), gen)
    return out
