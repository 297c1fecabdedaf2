"""The Engine: load a model once, then answer many questions by any registered method.

It batches queries that share an instruction + few-shot prefix, encodes that prefix once (its KV
is reused by every method, prompt and question), lays each query out by its method's row plan
(rows.plan_rows), decodes with the method's fusion rule (method_registry.Method) and records
which attention path ran. Scoring a given continuation (loglik) runs through the same chunks.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

from selfensemble.config.engine import KERNEL_FLEX, KERNEL_SDPA, EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.attention import dispatch as attn
from selfensemble.engine.attention.masks import attention_fusion
from selfensemble.engine.cache import PrefixCaches, new_cache
from selfensemble.engine.decoding import (
    Decoded,
    StepHook,
    candidate_seed,
    derive_seed,
    generate,
    prefill,
)
from selfensemble.engine.models import LoadedModel
from selfensemble.engine.packing import SHARED, PackedBatch, Row
from selfensemble.engine.prepared import Prepared, check_context, fusion_terms, lay_out
from selfensemble.engine.prompts import PromptFormat, PromptParts
from selfensemble.engine.queries import Answer, Query, query_parts, query_weights, sample_counts
from selfensemble.engine.rows import plan_rows
from selfensemble.engine.step import CompiledStep
from selfensemble.engine.streaming import StreamedAnswer, TextDeltas, check_streamable, stream_hook
from selfensemble.errors import SelfEnsembleError
from selfensemble.methods.registry import check_method, get_method

T = TypeVar("T")


class Engine:
    """Load a model once, then answer many questions by any method."""

    def __init__(self, lm: LoadedModel, config: EngineConfig | None = None):
        self.lm = lm
        self.config = config or EngineConfig()
        # attention: what prefill runs; attention_key: its stable name (provenance.ATTENTION_KEYS),
        # compared on resume with decode_key as attention_paths; attention_note: the sentence shown to
        # people (free to reword)
        self.attention, self.attention_key, self.attention_note = self._resolve_attention(self.config.attention)
        # the decode step: SDPA over the static step's dense masks (engine/step.py), compiled on request
        self._step = CompiledStep(self.lm.device.type) if self.config.compile else None
        self.decode_key = "sdpa-dense-compiled" if self.config.compile else "sdpa-dense"
        self._prefix_caches = PrefixCaches(int(self.config.prefix_cache_mb * 2**20))
        # prefill_tokens: tokens of prefilled rows (the cached prefix apart); calls: engine calls
        # (one prefill + one decode loop each); decoded_rows: rows those calls decoded; decode_steps:
        # iterations of those calls' decode loops; prefix_cache_*: lookups of encoded prefixes
        self.stats = {"prefill_tokens": 0, "generated_tokens": 0, "prefix_tokens_encoded": 0, "calls": 0,
                      "decoded_rows": 0, "decode_steps": 0, "prefix_cache_hits": 0, "prefix_cache_misses": 0,
                      "prefix_cache_evictions": 0}
        self._restore_attention: str | None = None  # set by from_model: the user's implementation
        self._was_training = False

    @classmethod
    def from_model(cls, model, tokenizer, config: EngineConfig | None = None) -> Engine:
        """An engine on a model the caller already loaded (any dtype, ``device_map``, quantisation).

        Switches the model to our attention implementation (refusing, with the reason, a family we
        cannot run exactly) and puts it in eval mode; ``close()`` or leaving a ``with`` block gives
        the model back its own attention implementation and training flag, so the caller's
        ``model.generate`` works as before.
        """
        from selfensemble.engine.models import input_device, use_our_attention

        was_training = model.training
        before = use_our_attention(model)
        model.eval()
        spec = getattr(model.config, "_name_or_path", "") or type(model).__name__
        lm = LoadedModel(model=model, tokenizer=tokenizer, spec=spec, device=input_device(model),
                         dtype=getattr(model, "dtype", None) or next(model.parameters()).dtype)
        try:
            engine = cls(lm, config)
        except BaseException:
            model.set_attn_implementation(before)
            model.train(was_training)
            raise
        engine._restore_attention = before
        engine._was_training = was_training
        return engine

    def close(self) -> None:
        """Give a model passed to ``from_model`` its own attention back; drop cached prefix KV."""
        self._prefix_caches.clear()
        if self._restore_attention is not None:
            self.lm.model.set_attn_implementation(self._restore_attention)
            self.lm.model.train(self._was_training)
            self._restore_attention = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- attention path -------------------------------------------------------------------------
    def _resolve_attention(self, requested: str | None) -> tuple[str, str, str]:
        """(attention implementation, stable key, human note) for ``requested``."""
        if requested is None and self.lm.device.type == "cpu":
            # torch 2.13's compiled CPU flex kernel fails to build (C++ codegen: cur_qSplitSize) for some
            # shapes once lengths vary; see tests/test_attention.py. The dense mask is the same mask.
            return KERNEL_SDPA, "sdpa-dense", "sdpa (dense mask; default on CPU, use --attention flex to try compiled flex)"
        if requested == KERNEL_SDPA:
            return KERNEL_SDPA, "sdpa-dense", "sdpa (dense mask, as requested)"
        ok, why = attn.flex_available(self.lm.device, (16, self._head_dim))
        if ok:
            if attn.COMPILE_FLEX:
                return KERNEL_FLEX, "flex-compiled", "flex (compiled FlexAttention)"
            return KERNEL_FLEX, "flex-eager", "flex (eager)"
        if requested == KERNEL_FLEX:
            raise SelfEnsembleError(f"FlexAttention cannot run here: {why}. Use attention sdpa.", arguments=("attention",))
        return self._fall_back(why)

    def _fall_back(self, why: str) -> tuple[str, str, str]:
        note = f"sdpa (FALLBACK: flex failed: {why})"
        warnings.warn(f"selfensemble: FlexAttention failed ({why}); falling back to SDPA with the same "
                      "dense mask. Results are recorded with attention path 'fallback-sdpa'.", RuntimeWarning,
                      stacklevel=3)
        if hasattr(self, "_prefix_caches"):
            self._prefix_caches.clear()
        return KERNEL_SDPA, "fallback-sdpa", note

    @property
    def compile_count(self) -> int:
        return attn.compile_count()

    # -- prefix KV reuse -----------------------------------------------------------------------
    @property
    def _head_dim(self) -> int:
        cfg = self.lm.model.config.get_text_config()
        return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)

    @property
    def _num_layers(self) -> int:
        return self.lm.model.config.get_text_config().num_hidden_layers

    def _prefix_cache(self, prefix: list[int], copies: int = 1):
        """KV of the prefix, encoded once; ``copies`` > 1 lays it out once per paraphrase (full layout).

        With restarted positions every paraphrase's own copy of the prefix has identical keys and
        values (same tokens, same positions, attending only to itself), so one encoding serves all.
        Every entry, whatever its copies, lives in one LRU store under ``config.prefix_cache_mb``.
        """
        key = (tuple(prefix), copies)
        cache = self._prefix_caches.get(key)
        if cache is not None:
            return cache
        if copies > 1:
            one = self._prefix_cache(prefix)
            cache = new_cache(self._num_layers, len(prefix) * copies)
            for i, layer in enumerate(one.layers):
                cache.update(layer.keys.repeat(1, 1, copies, 1), layer.values.repeat(1, 1, copies, 1), i)
        else:
            cache = new_cache(self._num_layers, len(prefix))
            row = Row(list(prefix), [SHARED] * len(prefix), list(range(len(prefix))))
            batch = PackedBatch.from_rows([row], 0, self.pad_id, 1, self.lm.device)
            with torch.inference_mode():
                prefill(self.lm.model, batch, cache, self.attention)
            self.stats["prefix_tokens_encoded"] += len(prefix)
        self._prefix_caches.put(key, cache)
        return cache

    @property
    def attention_paths(self) -> dict[str, str]:
        """The stable keys of the kernels that ran: {"prefill": attention_key, "decode": decode_key}.
        Prefill is flex or SDPA as resolved; every decode step runs SDPA with a dense mask."""
        return {"prefill": self.attention_key, "decode": self.decode_key}

    def prefix_cache_info(self) -> dict:
        """The prefix store's bound and contents (PrefixCaches.info)."""
        return self._prefix_caches.info()

    @property
    def pad_id(self) -> int:
        """The token id padding fills rows with (masked out, so any id works; the tokenizer's when it has one)."""
        tok = self.lm.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    # -- answering ------------------------------------------------------------------------------
    def answer(self, prompts: Sequence[str], method: str = "flex", gen: GenerationConfig | None = None,
               fmt: PromptFormat | None = None, weights: Sequence[float] | None = None,
               seed: int | None = None) -> Answer:
        """Answer one question asked through ``prompts`` (the original first)."""
        query = Query(prompts, fmt or PromptFormat(), weights, seed)
        return self.answer_many([query], method, gen)[0]

    def stream(self, prompts: Sequence[str], method: str = "flex", gen: GenerationConfig | None = None,
               fmt: PromptFormat | None = None, weights: Sequence[float] | None = None,
               seed: int | None = None) -> StreamedAnswer:
        """``answer(...)`` as it is decoded: iterate for text deltas (their concatenation is the
        Answer's ``answer``), then ``.answer`` holds the Answer (notes, attention paths, ...).

        The decode runs in a worker thread while the caller iterates; leaving the loop early (or
        ``close()``) stops it at the next step. ``vote`` cannot stream (a ConfigError). Bad prompts
        or weights are refused here, before anything runs.
        """
        check_method(method)
        check_streamable(method)
        gen = gen or GenerationConfig()
        query = Query(prompts, fmt or PromptFormat(), weights, seed)
        parts = [query_parts(self.lm.tokenizer, query)]
        w = [query_weights(method, query, parts[0])]
        return StreamedAnswer(lambda deltas: self.answer_parts(parts, method, gen, w, None, [query.stream_key],
                                                                [deltas])[0], self.lm.tokenizer, gen)

    def answer_many(self, queries: Sequence[Query], method: str, gen: GenerationConfig | None = None,
                    on_done: Callable[[int, Answer], None] | None = None,
                    streams: Sequence[TextDeltas | None] | None = None) -> list[Answer]:
        """Answer queries in batches of ``batch_size``; ``on_done(index, answer)`` fires as each batch ends.

        ``streams`` (one per query, or None): each query's reported answer sent as text deltas while
        it is decoded (streaming.TextDeltas; a cancelled one stops at the next step).
        """
        check_method(method)
        parts = [query_parts(self.lm.tokenizer, q) for q in queries]
        weights = [query_weights(method, q, p) for q, p in zip(queries, parts, strict=True)]
        return self.answer_parts(parts, method, gen, weights, on_done, [q.stream_key for q in queries], streams)

    def sample(self, queries: Sequence[Query], n_samples: int | Sequence[int],
               gen: GenerationConfig | None = None) -> list[list[Answer]]:
        """``n_samples`` (per query, or one for all) independent ``origin`` answers per query, e.g.
        candidate paraphrases: each prompt is prefilled once, then its KV is copied to its samples'
        rows, which decode together with the other queries' (batches of ``batch_size`` queries).

        Sample j of a query draws from its own stream ``candidate_seed(query.stream_key, j)``: it is
        exactly ``answer(query.prompts[:1], "origin", gen, query.fmt, seed=candidate_seed(key, j))``,
        whatever else shares the batch. Returns one list of n Answers per query (its prompt's
        ``prefill_tokens`` on each, prefilled once for all n).
        """
        counts = sample_counts(n_samples, len(queries))
        gen = gen or GenerationConfig()
        live = [i for i, n in enumerate(counts) if n > 0]
        parts = [query_parts(self.lm.tokenizer, queries[i], first_only=True) for i in live]
        results: list[list[Answer]] = [[] for _ in queries]
        def decode(prepared: Prepared, chunk: list[int]) -> list[list[Answer]]:
            return self._decode(prepared, "origin", gen, [queries[live[c]].stream_key for c in chunk],
                                samples=[counts[live[c]] for c in chunk])

        new_tokens = [gen.max_new_tokens] * len(parts)
        for chunk, got in self.run_chunks("origin", parts, [None] * len(parts), new_tokens, decode):
            for c, answers in zip(chunk, got, strict=True):
                results[live[c]] = answers
        return results

    def answer_parts(self, parts: Sequence[PromptParts], method: str, gen: GenerationConfig | None = None,
                     weights: Sequence[torch.Tensor | str | None] | None = None,
                     on_done: Callable[[int, Answer], None] | None = None,
                     stream_keys: Sequence[object] | None = None,
                     streams: Sequence[TextDeltas | None] | None = None) -> list[Answer]:
        """Answer queries already cut into token pieces (prefix | segments | cue), e.g. from a harness prompt.

        ``weights``: one (N,) tensor or per-step rule name per query for weighted_* methods (None
        otherwise). ``stream_keys``: each query's sampling-stream key (default: its prompts).
        ``streams``: as in ``answer_many``.
        """
        stream_keys = list(stream_keys) if stream_keys is not None else [tuple(p.prompts) for p in parts]
        spec = get_method(method)
        gen = gen or GenerationConfig()
        weights = list(weights) if weights is not None else [None] * len(parts)
        if spec.needs_weights and any(w is None for w in weights):
            raise SelfEnsembleError(f"Method {method} needs one weight per prompt.")
        results: list[Answer | None] = [None] * len(parts)
        if streams is not None:
            check_streamable(method)
            if len(streams) != len(parts):
                raise ValueError(f"streams: one per query (or None), got {len(streams)} for {len(parts)} queries")

        def decode(prepared: Prepared, chunk: list[int]) -> list[Answer]:
            hook = stream_hook([streams[i] for i in chunk], prepared.owner) if streams is not None else None
            return self._decode(prepared, method, gen, [stream_keys[i] for i in chunk], on_step=hook)

        for chunk, answers in self.run_chunks(method, parts, weights, [gen.max_new_tokens] * len(parts), decode):
            for i, a in zip(chunk, answers, strict=True):
                results[i] = a
                if streams is not None and streams[i] is not None and not streams[i].cancelled():
                    streams[i].close(a.answer)
                if on_done:
                    on_done(i, a)
        return results  # type: ignore[return-value]

    def run_chunks(self, method: str, parts: Sequence[PromptParts], weights: Sequence, new_tokens: Sequence[int],
                   run: Callable[[Prepared, list[int]], list[T]]) -> Iterator[tuple[list[int], list[T]]]:
        """(query indices, ``run(prepared, indices)``) per chunk (``chunks``), each chunk ``prepare``d and
        run under the attention fallback policy: with attention "auto", a flex failure switches the
        engine to SDPA (loudly, recorded as "fallback-sdpa") and the chunk is prepared and run again;
        with "flex" it is an error. Decoding (answer_parts) and scoring (loglik) both run through here.
        ``new_tokens[i]``: tokens query i adds after its prompt (answer length, continuation length).
        """
        weights = list(weights)
        for prefix, copies, chunk in self.chunks(method, parts):
            def once(chunk=chunk, prefix=prefix, copies=copies) -> list[T]:
                prepared = self.prepare(method, [parts[i] for i in chunk], [weights[i] for i in chunk], prefix,
                                        copies, [new_tokens[i] for i in chunk])
                return run(prepared, chunk)

            yield chunk, self._with_fallback(once)

    def chunks(self, method: str, parts: Sequence[PromptParts]) -> Iterator[tuple[list[int], int, list[int]]]:
        """(prefix tokens kept in the KV cache, copies, query indices) per batch: queries grouped by
        their cached prefix, at most ``config.batch_size`` at a time, in input order within a group."""
        by_prefix: dict[tuple[tuple[int, ...], int], list[int]] = {}
        for i, p in enumerate(parts):
            by_prefix.setdefault(self._prefix_layout(method, p), []).append(i)
        if get_method(method).one_row:
            # A prefix no other query shares (per-item demonstrations) is encoded once either way: one-row
            # queries then batch together with the prefix inside their row instead of running alone.
            lone = [k for k, idx in by_prefix.items() if len(idx) == 1 and k[1] == 1]
            if len(lone) > 1:
                by_prefix.setdefault(((), 0), []).extend(by_prefix.pop(k)[0] for k in lone)
                by_prefix[((), 0)].sort()
        bs = self.config.batch_size
        for (prefix, copies), idx in by_prefix.items():
            for c in range(0, len(idx), bs):
                yield list(prefix), copies, idx[c:c + bs]

    def _prefix_layout(self, method: str, parts: PromptParts) -> tuple[tuple[int, ...], int]:
        """(prefix tokens kept in the KV cache, copies): 0 copies = the prefix stays in the rows."""
        if not self.config.reuse_prefix or not parts.prefix:
            return (), 0
        if get_method(method).packs_prompts and self.config.layout == "full":
            # copies share one encoding only when every copy sits at the same positions
            return ((tuple(parts.prefix), len(parts.segments)) if self.config.positions == "restart" else ((), 0))
        return tuple(parts.prefix), 1

    def _with_fallback(self, fn: Callable[[], T]) -> T:
        """``fn()``; on a flex failure under attention "auto", fall back to SDPA once and call it again."""
        try:
            return fn()
        except SelfEnsembleError:
            raise
        except Exception as err:
            if self.attention != KERNEL_FLEX or not attn.is_flex_failure(err):
                raise  # out-of-memory, a bug in our code or the model's: surfaces as itself
            cause = attn.flex_failure_cause(err)
            why = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
            if self.config.attention == KERNEL_FLEX:
                raise SelfEnsembleError(f"FlexAttention failed during a forward pass: {why}. "
                                        "Use --attention sdpa.") from err
            self.attention, self.attention_key, self.attention_note = self._fall_back(why)
            return fn()

    def prepare(self, method: str, parts: Sequence[PromptParts], weights: Sequence, prefix: list[int], copies: int,
                new_tokens: Sequence[int]) -> Prepared:
        """Lay out one chunk (as ``chunks`` yields it) for the model under the current attention path.

        Rows from ``plan_rows`` query after query, answer groups, per-row N for attention fusion and
        its (scale, bias) terms, the padded batch (B, L) and a KV cache holding the cached ``prefix``
        (``copies`` times) with room for the longest ``new_tokens``. A query whose prompt plus its
        ``new_tokens[q]`` exceeds the model's context is refused here, before any forward.
        """
        started = time.perf_counter()
        plans = [plan_rows(method, p, w, self.config, copies > 0) for p, w in zip(parts, weights, strict=True)]
        full = get_method(method).packs_prompts and self.config.layout == "full"
        check_context(plans, new_tokens, self.lm.max_context, ", or layout 'shared'." if full else ".")
        rows, groups, group_weights, owner, fused_n = lay_out(method, parts, plans)
        terms = fusion_terms(attention_fusion(self.config), fused_n, self.lm.device)
        multiple = self.config.pad_multiple if self.attention == KERNEL_FLEX else 1
        cached = len(prefix) * copies
        pseg = [k for k in range(1, copies + 1) for _ in prefix] if copies > 1 else None
        batch = PackedBatch.from_rows(rows, cached, self.pad_id, multiple, self.lm.device, pseg)
        capacity = cached + batch.shape[1] + max(new_tokens)
        cache = new_cache(self._num_layers, capacity, self._prefix_cache(prefix, copies) if copies else None)
        for name in ("hits", "misses", "evictions"):
            self.stats[f"prefix_cache_{name}"] = getattr(self._prefix_caches, name)
        return Prepared(list(parts), plans, rows, groups, group_weights, owner, fused_n, batch, cache, terms,
                        len(prefix), started)

    def _run_chunk_once(self, method: str, parts: list[PromptParts], weights: list, prefix: list[int],
                        copies: int, gen: GenerationConfig, keys: list | None = None) -> list[Answer]:
        """One chunk prepared and decoded, no fallback (tests drive the engine's fusion through it)."""
        prepared = self.prepare(method, parts, weights, prefix, copies, [gen.max_new_tokens] * len(parts))
        return self._decode(prepared, method, gen, keys if keys is not None else [tuple(p.prompts) for p in parts])

    def _decode(self, prep: Prepared, method: str, gen: GenerationConfig, keys: list,
                samples: list[int] | None = None, on_step: StepHook | None = None) -> list:
        """Generate every group of a prepared chunk; one Answer per query (``keys``: sampling streams).

        ``samples`` (origin only): query q's one prefilled row continues as samples[q] sampled rows,
        sample j from stream candidate_seed(keys[q], j); then a list of samples[q] Answers per query.
        ``on_step``: decoding.generate's per-step hook (group indices are this chunk's ``prep.groups``).
        """
        groups, group_weights, owner, expand = prep.groups, prep.group_weights, prep.owner, None
        seeds = []
        for q, plan in enumerate(prep.plans):
            seeds += [derive_seed(gen.seed, keys[q], k) for k in range(len(plan.groups))]
        if samples is not None:
            expand = torch.repeat_interleave(torch.arange(len(prep.rows)), torch.tensor(samples))
            owner = expand.tolist()
            seeds = [derive_seed(gen.seed, candidate_seed(keys[q], j), 0) for q, n in enumerate(samples) for j in range(n)]
            groups, group_weights = [[r] for r in range(len(owner))], [None] * len(owner)
        with torch.inference_mode():
            decoded = generate(self.lm.model, self.lm.tokenizer, prep.batch, prep.cache, groups,
                               get_method(method).group_fusion_fn(), gen, attention=self.attention,
                               eos_ids=self.lm.eos_token_ids, weights=group_weights,
                               fusion=attention_fusion(self.config), fused_n=prep.fused_n, seeds=seeds,
                               expand=expand, step=self._step, on_step=on_step)
        seconds = (time.perf_counter() - prep.started) / len(decoded if samples is not None else prep.plans)
        self.stats["prefill_tokens"] += sum(len(r.tokens) for r in prep.rows)
        self.stats["generated_tokens"] += sum(len(d.tokens) for d in decoded)
        self.stats["calls"] += 1
        self.stats["decoded_rows"] += sum(len(g) for g in groups)
        # steps of the decode loop: the longest answer, its EOS step included
        self.stats["decode_steps"] += max((len(d.tokens) + (d.finish == "eos") for d in decoded), default=0)
        if samples is not None:
            return [[self._answer(method, p, [d], sum(len(r.tokens) for r in plan.rows) + prep.prefix_tokens, seconds)
                     for d, o in zip(decoded, owner, strict=True) if o == q]
                    for q, (p, plan) in enumerate(zip(prep.parts, prep.plans, strict=True))]
        return [self._answer(method, p, [d for d, o in zip(decoded, prep.owner, strict=True) if o == q],
                             sum(len(r.tokens) for r in plan.rows) + prep.prefix_tokens, seconds)
                for q, (p, plan) in enumerate(zip(prep.parts, prep.plans, strict=True))]

    def _answer(self, method: str, parts: PromptParts, decoded: list[Decoded], prefill_tokens: int,
                seconds: float) -> Answer:
        spec = get_method(method)
        each = spec.per_prompt
        per_prompt = [d.text.strip() for d in decoded] if each else None
        chosen = decoded[spec.select(per_prompt)] if spec.select is not None else decoded[0]
        return Answer(answer=chosen.text.strip(), method=method, prompts=list(parts.prompts),
                      generation=chosen.text, per_prompt=per_prompt, logprob=chosen.logprob,
                      tokens=list(chosen.tokens), finish=chosen.finish, attention=self.attention_paths,
                      attention_note=self.attention_note,
                      prefill_tokens=prefill_tokens, seconds=seconds, notes=list(parts.notes),
                      per_prompt_generation=[d.text for d in decoded] if each else None,
                      per_prompt_logprob=[d.logprob for d in decoded] if each else None,
                      per_prompt_finish=[d.finish for d in decoded] if each else None)
