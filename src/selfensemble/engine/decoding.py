"""The one decode loop: prefill a packed batch, then step with a KV cache.

Rows are grouped: every group decodes one shared answer. One batched fusion call turns every
group's (n_rows, vocab) logits into one distribution per group (group_fusion), one batched
selection picks every group's token on the device (sampling), one host copy brings the picks back,
and each group's token is fed to all its rows through the static decode step (step.py: masks built
once per answer, the same shapes at every step). origin / per_prompt / flex use groups of one row;
logit fusion uses one group of N rows per question.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from selfensemble.config.engine import KERNEL_FLEX, KERNEL_SDPA
from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.attention import masks
from selfensemble.engine.attention.dispatch import WindowMasks, flex_errors
from selfensemble.engine.cache import cache_capacity
from selfensemble.engine.packing import PackedBatch
from selfensemble.engine.sampling import sample_keys, select_tokens
from selfensemble.engine.step import StepMasks, decode_forward
from selfensemble.engine.stopping import TextWatch, can_stop_on_text, stop_text
from selfensemble.methods.group_fusion import GroupFusionFn, Groups


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
    if attention == KERNEL_FLEX:
        if fusion_terms is not None:
            score_mod = masks.fusion_score_mod(batch.segment_ids, batch.prefix_len, *fusion_terms,
                                               batch.prefix_segments)

        def flex_mask(window: int | None):
            with flex_errors():  # a failure to build the mask is a flex failure (the engine may fall back)
                return masks.block_mask(batch) if window is None else masks.block_mask(batch, window=window)

        mask, windows = flex_mask(None), WindowMasks(flex_mask)
    elif attention == KERNEL_SDPA:
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


@dataclass(frozen=True)
class Chosen:
    """What one group's answer did at one decode step, as ``generate``'s ``on_step`` hook sees it.

    ``token``: the token appended to the answer (``Decoded.tokens``), None when EOS ended it (EOS
    is not part of the answer); ``finish``: why the answer ended at this step ("eos", "newline",
    "stop", "length"), else None.
    """

    group: int
    token: int | None
    finish: str | None


#: ``on_step(step, chosen)`` → the groups to stop now (a stream whose client left), or None
StepHook = Callable[[int, list[Chosen]], "Iterable[int] | None"]


def generate(model, tokenizer, batch: PackedBatch, cache, groups: Sequence[Sequence[int]], fuse: GroupFusionFn,
             gen: GenerationConfig, *, attention: str, eos_ids: set[int],
             weights: Sequence[torch.Tensor | str | None] | None = None,
             fusion: masks.AttentionFusion | None = None, fused_n: Sequence[int] | None = None,
             seeds: Sequence[int] | None = None, expand: torch.Tensor | None = None,
             step: Callable | None = None, on_step: StepHook | None = None) -> list[Decoded]:
    """Decode one answer per group; rows of a group share every chosen token.

    ``groups`` lists row indices per group (each row in exactly one group); ``fuse`` fuses every
    group at once (group_fusion: (rows, vocab) logits + Groups → (groups, vocab)). ``fusion``
    (attention fusion knobs) applies to the rows whose ``fused_n`` (per row: paraphrases packed in
    it) is >= 2, with that row's own N, in prefill and in every decode step; every other row is
    untouched. ``seeds`` (one per group) key each group's own sampling stream (default: ``gen.seed``
    for every group), so a sampled answer depends on its own seed only, never on its batch
    neighbours. ``expand`` (B',) lists, per decoded row, the prefilled row it continues: each prompt
    is prefilled once and its KV and last logits copied to its rows (K samples of one prompt);
    ``groups``, ``weights`` and ``seeds`` then index the B' decoded rows, ``fused_n`` the prefilled ones.
    ``step``: the decode step (step.decode_forward, or a step.CompiledStep); ``on_step(i, chosen)``
    is called after step i's tokens are chosen, with one ``Chosen`` per group still answering; the
    group ids it returns stop answering now (finish "cancelled": a streamed answer nobody reads).
    Once half the rows have stopped, they are dropped from the KV cache and the step's tables (a
    row's result does not depend on its batch neighbours, so this only saves work).
    """
    dev = batch.input_ids.device
    B = batch.shape[0] if expand is None else len(expand)
    rows = Groups.build(groups, weights, dev)  # validates the partition and the weights, once
    if rows.index.shape[0] != B:
        raise ValueError("every row must belong to exactly one group")
    terms = _attention_terms(fusion, fused_n, batch.shape[0], dev)
    seeds = list(seeds) if seeds is not None else [gen.seed] * len(groups)
    if len(seeds) != len(groups):
        raise ValueError(f"seeds: one per group, got {len(seeds)} for {len(groups)} groups")
    keys = sample_keys(seeds, dev) if gen.do_sample else None

    logits = prefill(model, batch, cache, attention, terms)
    if expand is not None:
        logits, batch, terms = _expand_rows(expand.to(dev), logits, batch, cache, terms)
    tables = StepMasks.build(batch, terms, cache_capacity(cache))
    if tables.steps < gen.max_new_tokens - 1:
        raise ValueError(f"the KV cache has room for {tables.steps} answer tokens, {gen.max_new_tokens - 1} needed")
    forward = step or decode_forward
    answers = _Answers(tokenizer, gen, eos_ids, len(groups))
    positions, steps = batch.next_position.clone(), torch.zeros(1, dtype=torch.long, device=dev)
    for i in range(gen.max_new_tokens):
        fused = fuse(logits, rows)  # (groups in the tensors, vocab)
        chosen = select_tokens(fused, gen.do_sample, gen.temperature, gen.top_p, gen.top_k, keys, i)
        picked = fused.gather(1, chosen[:, None])[:, 0].double()
        # one host sync per step for every group's token and its log-prob (float64 holds any token id exactly)
        events = answers.record(torch.stack((chosen.double(), picked), 1).tolist(), last=i == gen.max_new_tokens - 1)
        if on_step is not None:
            answers.cancel(on_step(i, events) or ())
        if not answers.active or i == gen.max_new_tokens - 1:
            break
        kept = answers.drop_finished(rows)
        if kept is not None:  # half the rows are done: stop computing them
            groups_kept, rows_kept = (torch.tensor(x, dtype=torch.long, device=dev) for x in kept)
            cache.batch_select_indices(rows_kept)
            tables, positions, rows = tables.rows(rows_kept), positions[rows_kept], rows.keep(kept[0])
            chosen = chosen.index_select(0, groups_kept)
            keys = None if keys is None else keys.index_select(0, groups_kept)
        tokens = chosen.index_select(0, rows.index)[:, None]  # every row gets its group's token
        logits = forward(model, tokens, positions[:, None], steps, cache, tables)[:, -1, :]
        positions, steps = positions + 1, steps + 1
    return answers.finish()


def _attention_terms(fusion: masks.AttentionFusion | None, fused_n: Sequence[int] | None, rows: int,
                     dev) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-row (multiplier, bias) of attention fusion on the device, None when no row is fused."""
    if fusion is None or not fusion.active or fused_n is None or max(fused_n) <= 1:
        return None
    if len(fused_n) != rows:
        raise ValueError(f"fused_n has {len(fused_n)} entries for {rows} rows")
    return tuple(t.to(dev) for t in fusion.row_terms(torch.tensor(list(fused_n))))  # type: ignore[return-value]


class _Answers:
    """The host side of ``generate``: each group's tokens and log-probs, stop rules, which groups
    still answer, and which group each row of the step's tensors belongs to."""

    def __init__(self, tokenizer, gen: GenerationConfig, eos_ids: set[int], n_groups: int):
        self.tokenizer, self.gen, self.eos_ids = tokenizer, gen, eos_ids
        self.out = [Decoded() for _ in range(n_groups)]
        self.watches = [TextWatch(tokenizer, gen) for _ in range(n_groups)] if can_stop_on_text(gen) else None
        self.active = set(range(n_groups))
        self.in_tensors = list(range(n_groups))  # group of the step tensors' j-th group row → group id

    def record(self, picks: list[list[float]], last: bool) -> list[Chosen]:
        """Take step's (token, log-prob) per group in the tensors; returns what each answering group did."""
        events = []
        for g, (token, lp) in zip(self.in_tensors, picks, strict=True):
            if g not in self.active:
                continue
            token, out = int(token), self.out[g]
            if token in self.eos_ids:
                out.finish, out.stop_logprob = "eos", lp
                self.active.discard(g)
                events.append(Chosen(g, None, "eos"))
                continue
            out.tokens.append(token)
            out.logprobs.append(lp)
            reason = self.watches[g].push(out.tokens) if self.watches else None
            if reason:
                out.finish = reason
                self.active.discard(g)
            events.append(Chosen(g, token, reason or ("length" if last else None)))
        return events

    def cancel(self, groups: Iterable[int]) -> None:
        """Stop these groups' answers where they are (finish "cancelled")."""
        for g in groups:
            if g in self.active:
                self.out[g].finish = "cancelled"
                self.active.discard(g)

    def drop_finished(self, rows: Groups) -> tuple[list[int], list[int]] | None:
        """(group rows kept, tensor rows kept) when at most half the rows still answer, else None."""
        keep = [j for j, g in enumerate(self.in_tensors) if g in self.active]
        live = sorted(r for j in keep for r in rows.rows[j])
        if len(live) > rows.index.shape[0] // 2:
            return None
        self.in_tensors = [self.in_tensors[j] for j in keep]
        return keep, live

    def finish(self) -> list[Decoded]:
        for d in self.out:
            d.text, _ = stop_text(self.tokenizer.decode(d.tokens, skip_special_tokens=True), self.gen)
        return self.out
