"""lm-evaluation-harness adapter: the harness model ``selfensemble`` (any task, any of our methods).

    import selfensemble.integrations.lm_eval  # registers "selfensemble" with lm_eval
    lm_eval.simple_evaluate(model="selfensemble",
                            model_args="model=smollm2-135m,method=flex,num_paraphrases=5,batch_size=8",
                            tasks=["webqs"])

Requests map onto the engine like this (the question is found by harness_prompt.split_context):

* ``generate_until``: the context's final question is asked through N prompts (the original +
  N-1 paraphrases) and answered by ``method``, greedy unless the task asks to sample, stopping at
  the request's ``until`` strings (the text is cut there, as the harness does) or after
  ``max_gen_toks``.
* ``loglikelihood``: the continuation is scored teacher-forced, its log-probability fused over the
  N prompts token by token (loglik.py); ``is_greedy`` is judged on the fused distribution.
* ``loglikelihood_rolling``: the PLAIN model's rolling log-likelihood (harness windows, no
  paraphrases): perplexity tasks have no question to paraphrase.

Paraphrases come from the document when it has a list under ``paraphrase_field`` (default
"paraphrases"), else the model writes them as `run` does (one_question.py: the gated writer and the
cache every entry point shares; ``counts["short_after_gate"]`` counts questions the gate left short);
``paraphrase_source=doc|generate`` forces one. Weighted methods take one weight per
prompt (original first) from the document's ``weights_field``.

Tokens (``tokenize``): "whole" (default) tokenises the context in one piece, as the harness's ``hf``
model does, and cuts it into prefix | question | cue at token boundaries, so ``method=origin``
scores exactly what ``hf`` scores; "pieces" tokenises the three pieces alone, as ``selfensemble
run`` does (the two differ where text joins pieces, e.g. a blank line "\n\n" before the question is
one token alone but two inside the whole text). Paraphrase lines are always tokenised on their own. Counts of what happened (contexts without a question,
paraphrases from the document or generated, duplicates dropped) are in ``SelfEnsembleLM.report()``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from selfensemble.engine.prompts import PromptParts, _adds_bos, clean_prompts
from selfensemble.errors import SelfEnsembleError
from selfensemble.integrations.harness_prompt import ContextSplit, split_context

log = logging.getLogger(__name__)
PARAPHRASE_SOURCES = ("auto", "doc", "generate")
TOKENIZE_MODES = ("whole", "pieces")  # whole: as the harness's hf model; pieces: as `selfensemble run`


@dataclass
class Prepared:
    """One harness context as the engine's pieces, plus per-prompt weights for weighted methods."""

    parts: PromptParts
    weights: torch.Tensor | None
    context_tokens: list[int]


def _engine_options(options: dict) -> tuple[dict, dict]:
    """Split extra model_args into EngineConfig fields and LoadSpec fields (``torch_dtype``: the old
    name of ``dtype``); unknown keys are an error."""
    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.load import LoadSpec

    config_keys = {f.name for f in fields(EngineConfig)}
    load_keys = {f.name for f in fields(LoadSpec)} - {"model"} | {"torch_dtype"}
    unknown = sorted(set(options) - config_keys - load_keys)
    if unknown:
        raise SelfEnsembleError(f"Unknown selfensemble model_args {unknown}; engine options: "
                                f"{', '.join(sorted(config_keys | load_keys))}.")
    return ({k: v for k, v in options.items() if k in config_keys},
            {k: v for k, v in options.items() if k in load_keys})


@register_model("selfensemble")
class SelfEnsembleLM(LM):
    """The harness's view of one selfensemble Engine (one model, one method, N prompts).

    ``engine``: an Engine already loaded (tests, notebooks), else ``model`` is loaded with the
    ``device``/``dtype``/... in ``options``. ``max_batch_size`` is accepted because the harness
    passes it, and unused (batches are ``batch_size`` queries). ``progress``: a progress.Progress
    that hears the writing of paraphrases, question by question (the CLI draws it on stderr, as
    `run` does; None: silent). Paraphrases are written only for a method that asks more than the
    question (not ``origin``).
    """

    def __init__(self, model: str = "smollm2-135m", method: str = "flex", num_paraphrases: int = 5,
                 batch_size: int | str = 8, paraphrase_source: str = "auto", paraphrase_field: str = "paraphrases",
                 weights_field: str = "weights", tokenize: str = "whole", seed: int = 0, engine=None,
                 max_batch_size=None, progress=None, variants: str = "paraphrase", variant_levels: int | None = None,
                 **options):
        super().__init__()
        from selfensemble.config.engine import EngineConfig
        from selfensemble.config.load import LoadSpec
        from selfensemble.engine.factory import build_engine
        from selfensemble.methods.registry import check_method

        self.method = check_method(str(method))
        self.num_paraphrases = int(num_paraphrases)
        from selfensemble.methods.registry import get_method

        # a method that asks the original only (origin) writes no paraphrases
        self._prompts = 1 if get_method(self.method).asks_original_only else self.num_paraphrases
        if self.num_paraphrases < 1:
            raise SelfEnsembleError("num_paraphrases must be >= 1 (it counts the original question).")
        if paraphrase_source not in PARAPHRASE_SOURCES:
            raise SelfEnsembleError(f"paraphrase_source must be one of {', '.join(PARAPHRASE_SOURCES)}, "
                                    f"got {paraphrase_source!r}.")
        if not str(batch_size).isdigit():
            raise SelfEnsembleError(f"batch_size must be a positive integer, got {batch_size!r}.")
        self.paraphrase_source, self.paraphrase_field, self.weights_field = paraphrase_source, paraphrase_field, weights_field
        if tokenize not in TOKENIZE_MODES:
            raise SelfEnsembleError(f"tokenize must be one of {', '.join(TOKENIZE_MODES)}, got {tokenize!r}.")
        self.seed, self.model_spec, self.tokenize = int(seed), str(model), tokenize
        self._variants(variants, variant_levels)
        config_opts, load_opts = _engine_options(options)
        if engine is None:
            if "torch_dtype" in load_opts:  # load_model's old name of dtype
                load_opts["dtype"] = load_opts.pop("torch_dtype")
            config = EngineConfig(batch_size=int(batch_size), **config_opts)  # checked before the load
            engine = build_engine(LoadSpec(self.model_spec, seed=self.seed, **load_opts), config)
        self.engine = engine
        self.progress = progress  # the writing of paraphrases (the CLI renders it; None: silent)
        self.counts = {"contexts": 0, "with_paraphrases": 0, "no_question": 0, "prompts": 0,
                       "paraphrases_from_doc": 0, "paraphrases_generated": 0, "duplicates_dropped": 0,
                       "retokenized_pieces": 0, "short_after_gate": 0, "with_variants": 0,
                       "variants_unreadable": 0}
        self._prepared: dict[str, Prepared] = {}
        self.paraphrase_seconds = 0.0  # model-written paraphrases (0 when all came from the doc or the cache)

    def _variants(self, variants, variant_levels) -> None:
        """Check and keep the variant settings (harness_variants.py); the plain run is paraphrase alone."""
        from selfensemble.config.variants import DEFAULT_VARIANTS, check_levels, parse_variants
        from selfensemble.integrations.harness_variants import check_harness_variants
        from selfensemble.methods.registry import get_method

        self.variants = parse_variants(variants)
        self.variant_levels = check_levels(None if variant_levels in (None, "") else int(variant_levels))
        self.plain = self.variants == DEFAULT_VARIANTS and self.variant_levels is None
        check_harness_variants(self.variants)
        if not self.plain and get_method(self.method).needs_weights:
            raise SelfEnsembleError(f"Method {self.method} takes per-prompt weights from the documents, which "
                                    "cannot weigh variants; use avg, max or flex with variants.")
        if not self.plain:  # the paraphrase dimension's values: the question and its paraphrases
            self._prompts = (self.variant_levels or self.num_paraphrases) if "paraphrase" in self.variants else 1

    # -- what the harness and the CLI read back ------------------------------------------------------
    def report(self) -> dict:
        """Configuration and counts of this adapter's run (written next to the harness's results)."""
        return {"model": self.model_spec, "method": self.method, "num_paraphrases": self.num_paraphrases,
                "variants": list(self.variants), "variant_levels": self.variant_levels,
                "paraphrase_source": self.paraphrase_source, "attention": self.engine.attention_paths,
                "attention_note": self.engine.attention_note,
                "engine": {f.name: getattr(self.engine.config, f.name) for f in fields(self.engine.config)},
                "counts": dict(self.counts), "paraphrase_seconds": round(self.paraphrase_seconds, 2),
                "provenance": _provenance()}

    @property
    def tokenizer_name(self) -> str:
        return self.model_spec.replace("/", "__")

    # -- tokens ---------------------------------------------------------------------------------------
    @property
    def _tok(self):
        return self.engine.lm.tokenizer

    def _encode(self, text: str) -> list[int]:
        """Like the harness's hf tok_encode: the tokenizer's own BOS rule, no truncation."""
        ids = list(self._tok(text, add_special_tokens=False).input_ids) if text else []
        return [self._tok.bos_token_id] + ids if _adds_bos(self._tok) else ids

    def _cut(self, context: str, split: ContextSplit) -> tuple[list[int], list[int], list[int]]:
        """prefix | question line | cue tokens cut from the whole context's tokens (exactly hf's tokens)."""
        if self.tokenize == "pieces":
            return self._pieces(split)
        enc = self._tok(context, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc.input_ids), [tuple(o) for o in enc.offset_mapping]
        starts = {s: i for i, (s, _) in reversed(list(enumerate(offsets)))}
        q_char, cue_char = len(split.prefix), len(context) - len(split.cue)
        bos = [self._tok.bos_token_id] if _adds_bos(self._tok) else []
        if q_char in starts and cue_char in starts and len(split.cue) > 0:
            q, c = starts[q_char], starts[cue_char]
            if (q == 0 or offsets[q - 1][1] <= q_char) and offsets[c - 1][1] <= cue_char and q < c:
                return bos + ids[:q], ids[q:c], ids[c:]
        self.counts["retokenized_pieces"] += 1  # a boundary falls inside a token: tokenise the pieces alone
        return self._pieces(split)

    def _pieces(self, split: ContextSplit) -> tuple[list[int], list[int], list[int]]:
        """prefix | question line | cue each tokenised alone, as prompts.build_parts does for `selfensemble run`."""
        skip = 1 if _adds_bos(self._tok) else 0
        return self._encode(split.prefix), self._encode(split.segment())[skip:], self._encode(split.cue)[skip:]

    # -- paraphrases ----------------------------------------------------------------------------------
    def _doc_paraphrases(self, doc) -> list[str] | None:
        value = doc.get(self.paraphrase_field) if isinstance(doc, dict) else None
        if value is None:
            if self.paraphrase_source == "doc":
                raise SelfEnsembleError(f"paraphrase_source=doc but a document has no {self.paraphrase_field!r} field.")
            return None
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise SelfEnsembleError(f"Document field {self.paraphrase_field!r} must be a list of strings, got {value!r}.")
        return list(value)

    def _generated(self, questions: list[str]) -> dict[str, list[str]]:
        """Model-written paraphrases for ``questions`` (on-disk cache; the model runs only for new ones)."""
        if not questions or self._prompts == 1:
            return {}
        from selfensemble.pipeline.paraphrase.one_question import write

        t0 = time.perf_counter()  # the gate `run` applies; a question short of paraphrases is counted
        written = write(lambda: self.engine, self.model_spec, questions, self.num_paraphrases, seed=self.seed,
                        progress=self.progress)
        self.paraphrase_seconds += time.perf_counter() - t0
        self.counts["short_after_gate"] += sum(len(w.paraphrases) < w.wanted for w in written)
        return {q: list(w.paraphrases) for q, w in zip(questions, written, strict=True)}

    def _prepare(self, requests: Sequence) -> list[Prepared]:
        """Each request's context → Prepared (paraphrased once per distinct context and document paraphrases)."""
        keyed = []
        for r in requests:
            context = r.args[0].rstrip() if r.request_type == "loglikelihood" else r.args[0]
            doc_paras = self._doc_paraphrases(r.doc) if self.paraphrase_source != "generate" else None
            keyed.append((json.dumps([context, doc_paras]), context, r.doc, doc_paras))
        todo = {k: (c, d, p) for k, c, d, p in keyed if k not in self._prepared}
        need = sorted({s.question for c, _, p in todo.values() if p is None and (s := split_context(c))})
        generated = self._generated(need)
        for key, (context, doc, doc_paras) in todo.items():
            self._prepared[key] = self._prepare_one(context, doc, doc_paras, generated)
        return [self._prepared[k] for k, *_ in keyed]

    def _prepare_one(self, context: str, doc, doc_paras: list[str] | None, generated: dict) -> Prepared:
        self.counts["contexts"] += 1
        whole = self._encode(context)
        split = split_context(context)
        if split is None:
            self.counts["no_question"] += 1
            segment = whole or [self._prefix_token]
            return Prepared(PromptParts([], [segment], [], [context], kept_indices=[0]),
                            self._weights(doc, [0]), whole)
        paras = (doc_paras if doc_paras is not None else generated.get(split.question, []))[: self._prompts - 1]
        self.counts["paraphrases_from_doc" if doc_paras is not None else "paraphrases_generated"] += len(paras)
        prompts, notes, kept = clean_prompts([split.question, *paras])
        self.counts["duplicates_dropped"] += len(notes)
        self.counts["with_paraphrases"] += len(prompts) > 1
        self.counts["prompts"] += len(prompts)
        if not self.plain and (varied := self._variant_parts(split, prompts)) is not None:
            return Prepared(varied, None, whole)
        prefix, segment, cue = self._cut(context, split)
        segments = [segment] + [self._encode(split.segment(p))[1 if _adds_bos(self._tok) else 0:] for p in prompts[1:]]
        parts = PromptParts(prefix, segments, cue, prompts, notes, kept)
        return Prepared(parts, self._weights(doc, kept), whole)

    def _variant_parts(self, split: ContextSplit, prompts: list[str]) -> PromptParts | None:
        """The context's N variants as token pieces (tokenised in pieces, as `run` does), or None when its
        demonstrations cannot be read back (counted in ``variants_unreadable``; asked as a plain context)."""
        from selfensemble.engine.prompts import build_variant_parts
        from selfensemble.integrations.harness_variants import harness_format, harness_variants

        base = harness_format(split)
        if base is None:
            self.counts["variants_unreadable"] += 1
            return None
        r = harness_variants(split, base, prompts, self.variants, self.num_paraphrases,
                             self.variant_levels or self.num_paraphrases, self.seed)
        self.counts["with_variants"] += 1
        return build_variant_parts(self._tok, r.formats, r.prompts)

    def _weights(self, doc, kept: list[int]) -> torch.Tensor | None:
        from selfensemble.methods.registry import get_method

        if not get_method(self.method).needs_weights:
            return None
        if len(kept) == 1:
            return torch.ones(1)
        value = doc.get(self.weights_field) if isinstance(doc, dict) else None
        if value is None:
            raise SelfEnsembleError(f"Method {self.method} needs per-prompt weights: give each document a "
                                    f"{self.weights_field!r} list (original question first), or use avg/max.")
        if any(i >= len(value) for i in kept):
            raise SelfEnsembleError(f"Document field {self.weights_field!r} has {len(value)} weights for "
                                    f"{max(kept) + 1} prompts; give one per prompt.")
        return torch.tensor([float(value[i]) for i in kept])

    @property
    def _prefix_token(self) -> int:
        tok = self._tok
        return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    # -- the three request types ----------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """One answer per request: the chosen method over the context's N prompts, cut at ``until``."""
        prepared = self._prepare(requests)
        by_kwargs: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            by_kwargs.setdefault(json.dumps(r.args[1], sort_keys=True, default=str), []).append(i)
        out: list[str | None] = [None] * len(requests)
        for idx in by_kwargs.values():
            gen = self._generation_config(requests[idx[0]].args[1])
            answers = self.engine.answer_parts([prepared[i].parts for i in idx], self.method, gen,
                                               [prepared[i].weights for i in idx])
            for i, a in zip(idx, answers, strict=True):
                out[i] = a.generation
        return out  # type: ignore[return-value]

    def _generation_config(self, kwargs: dict):
        from selfensemble.config.generation import GenerationConfig

        kwargs = dict(kwargs or {})
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        do_sample = bool(kwargs.pop("do_sample", False))
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        do_sample = do_sample and temperature > 0  # the harness's temperature 0 means greedy
        return GenerationConfig(max_new_tokens=int(kwargs.pop("max_gen_toks", 256)), do_sample=do_sample,
                                temperature=temperature if do_sample else 1.0, top_p=float(kwargs.pop("top_p", 1.0)),
                                top_k=int(kwargs.pop("top_k", 0) or 0), seed=self.seed, stop_at_newline=False,
                                stop_strings=tuple(u for u in until if u))

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(fused log p(continuation | context), is_greedy) per request; the harness's trailing-space rule."""
        from selfensemble.engine.loglik import score_continuations

        prepared = self._prepare(requests)
        conts = []
        for r, p in zip(requests, prepared, strict=True):
            context, continuation = r.args
            n_spaces = len(context) - len(context.rstrip())
            continuation = context[len(context) - n_spaces:] + continuation
            if context.rstrip():
                cont = self._encode(context.rstrip() + continuation)[len(p.context_tokens):]
            else:
                cont = self._encode(continuation)[1 if _adds_bos(self._tok) else 0:]
            if not cont:
                raise SelfEnsembleError(f"Continuation {r.args[1]!r} has no tokens of its own after the context.")
            conts.append(cont)
        scored = score_continuations(self.engine, [p.parts for p in prepared], conts, self.method,
                                     [p.weights for p in prepared])
        return [(s.logprob, s.is_greedy) for s in scored]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """The PLAIN model's rolling log-likelihood (no paraphrases), windows as the harness's hf model."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        from selfensemble.engine.loglik import score_continuations

        out = []
        for r in requests:
            tokens = self._encode(r.args[0])
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                tokens, self._prefix_token, self.engine.lm.max_context, 1)]
            parts = [PromptParts([], [ctx], [], [""], kept_indices=[0]) for ctx, _ in windows]
            scored = score_continuations(self.engine, parts, [pred for _, pred in windows], "origin")
            out.append(float(sum(s.logprob for s in scored)))
        return out


def _provenance() -> dict:
    """Library versions and the source commit (or installed-source hash) behind these results."""
    from selfensemble.store.provenance import package_versions, source

    return {"versions": package_versions(), "source": source()}


def task_manager(tasks: Sequence[str], include_path: str | None = None):
    """The harness's TaskManager that knows ``tasks``; an unknown name is a one-line error.

    Only ``include_path`` is indexed when it holds every task; the built-in index (~15,000 tasks,
    ~20 s) is read only when needed.
    """
    from lm_eval.tasks import TaskManager

    from selfensemble.errors import did_you_mean

    manager = TaskManager(include_path=include_path, include_defaults=False) if include_path else None
    if manager is None or not all(manager.match_tasks([t]) for t in tasks):
        manager = TaskManager(include_path=include_path)
    known = set(manager.all_tasks)
    for t in tasks:
        if t not in known and not manager.match_tasks([t]):
            where = f" (looked in {include_path} and the built-in tasks)" if include_path else ""
            raise SelfEnsembleError(f"Unknown harness task {t!r}{where}." + did_you_mean(t, sorted(known)))
    return manager


def evaluate(lm: SelfEnsembleLM, tasks: Sequence[str], include_path: str | None = None,
             limit: int | float | None = None, log_samples: bool = False, manager=None) -> dict:
    """Run the harness on ``tasks`` (built-in names or YAMLs under ``include_path``); its result dict."""
    import lm_eval

    manager = manager or task_manager(tasks, include_path)
    results = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit,
                                      log_samples=log_samples)
    if lm.counts["no_question"]:
        log.warning("selfensemble: %d of %d contexts had no question to paraphrase; they were answered "
                    "from the whole context without paraphrases.", lm.counts["no_question"], lm.counts["contexts"])
    if lm.counts["variants_unreadable"]:
        log.warning("selfensemble: %d of %d contexts had demonstrations that could not be read back for variants; "
                    "they were asked through their paraphrases only.", lm.counts["variants_unreadable"],
                    lm.counts["contexts"])
    return results
