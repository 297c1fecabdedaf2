"""Our attention dispatcher, registered through transformers' ``AttentionInterface``.

The mask we pass decides the kernel: a ``BlockMask`` runs FlexAttention (compiled once, compile
count tracked), a dense tensor runs SDPA. No model code is patched: every model that uses the
AttentionInterface picks this up via ``attn_implementation="selfensemble"``.

An optional ``selfensemble_score_mod`` keyword (passed to ``model(...)``; transformers forwards
extra keywords to the attention function) adds a score bias in the flex path.

Per-layer features the model passes in: ``sliding_window=W`` (Mistral, Qwen2/3, Gemma 2/3 send it
to their sliding layers only) picks the mask built for that window from the ``selfensemble_windows``
keyword (a ``WindowMasks``; a sliding layer without one is an error, never full attention), and
``softcap`` (Gemma 2) is applied on both paths. A mask whose key length differs from the keys is an
error, never sliced.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch

ATTN_IMPLEMENTATION = "selfensemble"
_registered = False
_compiled_flex: Callable | None = None
_compiled_flex_static: Callable | None = None
STATIC_RECOMPILE_LIMIT = 64
COMPILE_FLEX = True  # tests may switch to eager flex for tiny shapes


class FlexAttentionError(RuntimeError):
    """FlexAttention (mask building, compiling or the kernel) failed; ``__cause__`` is the original.

    The engine falls back to SDPA on this (and on dynamo/inductor compile errors) only: any other
    error, an out-of-memory included, surfaces as itself.
    """


@contextlib.contextmanager
def flex_errors():
    """Re-raise failures inside a FlexAttention call as FlexAttentionError (out-of-memory excepted)."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except FlexAttentionError:
        raise
    except Exception as err:
        raise FlexAttentionError(f"{type(err).__name__}: {err}") from err


def is_flex_failure(err: BaseException) -> bool:
    """Whether ``err`` is a FlexAttention/compile failure the engine may fall back from."""
    if isinstance(err, FlexAttentionError):
        return True
    try:
        from torch._dynamo.exc import TorchDynamoException
        from torch._inductor.exc import InductorError
    except ImportError:  # pragma: no cover - older torch
        return False
    return isinstance(err, TorchDynamoException | InductorError)


def flex_failure_cause(err: BaseException) -> BaseException:
    """The original error behind a FlexAttentionError (for the fallback note)."""
    return err.__cause__ if isinstance(err, FlexAttentionError) and err.__cause__ is not None else err


def compile_count() -> int:
    """Graphs compiled by dynamo in this process (we only compile flex attention)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _flex() -> Callable:
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if not COMPILE_FLEX:
        return flex_attention
    if _compiled_flex is None:
        compiled = torch.compile(flex_attention, dynamic=None)

        def strict_flex(*args, **kwargs):
            # Past the recompile limit dynamo silently runs a ~100x slower path: make that an error,
            # for our compiled calls only (config.patch restores the user's setting on exit).
            with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
                return compiled(*args, **kwargs)

        _compiled_flex = strict_flex
    return _compiled_flex


def _flex_static() -> Callable:
    """Compiled flex with static shapes, for sliding-window masks on CPU.

    torch 2.13's CPU flex template fails to build (C++ codegen: 'cur_kvSplitSize9' not declared)
    when a window mask_mod is recompiled for a second length with dynamic shapes; static shapes
    compile each padded length on its own and work (benchmarks/repro/flex_cpu_window_repro.py).
    """
    global _compiled_flex_static
    from torch.nn.attention.flex_attention import flex_attention

    if not COMPILE_FLEX:
        return flex_attention
    if _compiled_flex_static is None:
        import torch._dynamo.config as dynamo_config

        def flex_window(*args, **kwargs):  # its own code object: dynamo counts recompiles per code object
            return flex_attention(*args, **kwargs)

        static = torch.compile(flex_window, dynamic=False)

        def _compiled_flex_static(*args, **kwargs):
            # one graph per padded shape: allow more of them than dynamo's default of 8, and past that
            # limit fail loudly as the dynamic path does (dynamo's own default is to run eager, silently)
            with dynamo_config.patch(recompile_limit=STATIC_RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True):
                return static(*args, **kwargs)

    return _compiled_flex_static


def flex_kernel_options(device_type: str, q_len: int, gqa_group: int, q_block: int) -> dict | None:
    """Ask for the main flex kernel where torch's short-query (decoding) kernel has no config.

    Inductor lowers queries shorter than 128 with its flex-decoding template, whose BLOCK_M is
    next_power_of_2(q_len × query heads per KV head); once that exceeds the block mask's Q block
    (128) every config is filtered out and compilation fails with NoValidChoicesError (seen on an
    H100, torch 2.11: a 76-token prefill row of llama-3.2-1b, 4 query heads per KV head). The main
    kernel handles any length. Single-token decode steps keep the decoding kernel.
    """
    if device_type != "cuda" or q_len * gqa_group <= q_block:
        return None
    return {"FORCE_USE_FLEX_ATTENTION": True}


class WindowMasks:
    """The masks of sliding-window layers for one forward, built on first use per window size.

    transformers hands every layer the same ``attention_mask`` but tells a sliding layer its window,
    so the mask for window W is made when the first such layer asks and reused by the others.
    """

    def __init__(self, build: Callable[[int], object]):
        self._build, self._made = build, {}

    def __call__(self, window: int):
        if window not in self._made:
            self._made[window] = self._build(int(window))
        return self._made[window]


def dense_scores_attention(query, key, value, mask, scaling: float | None, softcap: float | None = None,
                           mult: torch.Tensor | None = None) -> torch.Tensor:
    """Attention written out, for what SDPA cannot take: tanh softcapping (Gemma 2) and per-(query, key)
    score multipliers (attention fusion's temperature). Order as on the flex path: softcap, then
    ``score * mult``, then the mask (boolean, or additive with the fusion bias in it).

    query (B, Hq, Lq, D), key/value (B, Hkv, Lk, D), mask/mult broadcastable to (B, 1, Lq, Lk)
    → (B, Hq, Lq, D).
    """
    if query.shape[1] != key.shape[1]:
        rep = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if mult is not None:
        if mult.shape[-1] != key.shape[-2]:
            raise ValueError(f"score multiplier covers {mult.shape[-1]} keys but the layer has {key.shape[-2]}")
        scores = scores * mult
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = torch.softmax(scores.float(), dim=-1).to(value.dtype)
    return torch.matmul(probs, value)


def selfensemble_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    sliding_window: int | None = None,
    selfensemble_score_mod: Callable | None = None,
    selfensemble_windows: WindowMasks | None = None,
    selfensemble_score_scale: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """query (B, Hq, Lq, D), key/value (B, Hkv, Lkv, D) → output (B, Lq, Hq, D)."""
    from torch.nn.attention.flex_attention import BlockMask

    if kwargs.get("s_aux") is not None:
        raise NotImplementedError("attention sinks (s_aux) are not supported by selfensemble attention")
    if sliding_window is not None:
        if selfensemble_windows is None:
            raise ValueError(f"layer {getattr(module, 'layer_idx', '?')} has a sliding window of {sliding_window} "
                             "but no windowed mask was passed (selfensemble_windows); refusing full attention")
        attention_mask = selfensemble_windows(sliding_window)
    if isinstance(attention_mask, BlockMask):
        if attention_mask.shape[-1] != key.shape[-2] or attention_mask.shape[-2] != query.shape[-2]:
            raise ValueError(f"BlockMask is {tuple(attention_mask.shape[-2:])} but attention is "
                             f"{query.shape[-2]} queries x {key.shape[-2]} keys")
        score_mod = selfensemble_score_mod
        if softcap is not None:
            inner = score_mod

            def score_mod(score, b, h, q, kv):  # noqa: F811 - softcap first, then our bias
                score = softcap * torch.tanh(score / softcap)
                return inner(score, b, h, q, kv) if inner is not None else score

        kernel = _flex_static() if sliding_window is not None and query.device.type == "cpu" else _flex()
        options = flex_kernel_options(query.device.type, query.shape[-2], query.shape[1] // key.shape[1],
                                      attention_mask.BLOCK_SIZE[0])
        with flex_errors():
            out = kernel(query, key, value, block_mask=attention_mask, score_mod=score_mod, scale=scaling,
                         enable_gqa=query.shape[1] != key.shape[1], kernel_options=options)
        return out.transpose(1, 2).contiguous(), None
    if attention_mask is None:
        raise RuntimeError("selfensemble attention needs an explicit mask (BlockMask or dense tensor).")
    if attention_mask.shape[-1] != key.shape[-2]:
        raise ValueError(f"attention mask covers {attention_mask.shape[-1]} keys but the layer has "
                         f"{key.shape[-2]} (prefix/cache and mask out of step)")
    mask = attention_mask
    if softcap is not None or selfensemble_score_scale is not None:
        out = dense_scores_attention(query, key, value, mask, scaling, softcap, selfensemble_score_scale)
        return out.transpose(1, 2).contiguous(), None
    # enable_gqa shares KV heads without copying them: repeat_interleave of the whole cache was
    # about a third of CPU decode time (SmolLM2, 3 KV heads for 9 query heads)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                                           enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


def register_attention() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, selfensemble_attention)
    # We always pass a prepared 4D mask or BlockMask; this entry only serves transformers' own helpers.
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPLEMENTATION, sdpa_mask)
    _registered = True


#: Probe lengths: 8, 24, 40, 56 and 88 came out wrong here, one or two per process and in some processes
#: none (benchmarks/repro/flex_cpu_length_repro.py); none is a multiple of 128, most not of 16 or 32
PROBE_LENGTHS = (8, 24, 40, 56, 77, 88, 130)


def flex_available(device: torch.device | str = "cpu", head_dims: tuple[int, ...] = (16,)) -> tuple[bool, str]:
    """Whether (compiled) FlexAttention runs on ``device`` and agrees with SDPA, on several shapes.

    torch 2.13's compiled CPU flex kernel returned wrong values for some lengths only (an AVX2-only
    AMD EPYC: causal mask, 2 heads, head dim 16, length 24 or 40 off by ~2, and which length failed
    varied between processes; benchmarks/repro/flex_cpu_length_repro.py), so one probe shape is not
    enough: every length of ``PROBE_LENGTHS`` is checked with a causal mask for each of ``head_dims``
    (pass the model's), and one length with a segment mask that captures a tensor (as the engine's
    masks do). Returns (False, why) naming the first shape that disagreed, or the error raised.
    A probe that passes proves no more than its shapes: on that CPU the wrong lengths changed from
    process to process, so compiled flex stays opt-in there (the CPU default is SDPA, the same mask).
    """
    try:
        from torch.nn.attention.flex_attention import create_block_mask
    except ImportError as err:  # torch < 2.5
        return False, f"torch {torch.__version__} has no FlexAttention ({err})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for dim in dict.fromkeys(head_dims):
                for length in PROBE_LENGTHS:
                    err = _probe(create_block_mask, device, length, dim, segments=False)
                    if err > 1e-4:
                        return False, (f"compiled FlexAttention disagrees with SDPA on a probe (max |diff| {err:.2g} "
                                       f"at length {length}, head dim {dim}, causal mask)")
            err = _probe(create_block_mask, device, PROBE_LENGTHS[3], head_dims[0], segments=True)
            if err > 1e-4:
                return False, (f"compiled FlexAttention disagrees with SDPA on a probe (max |diff| {err:.2g} at "
                               f"length {PROBE_LENGTHS[3]}, head dim {head_dims[0]}, segment mask)")
    except Exception as err:  # noqa: BLE001 - reported to the caller, never swallowed silently
        return False, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return True, "ok"


def _probe(create_block_mask, device, length: int, dim: int, segments: bool) -> float:
    """Max |flex - SDPA| on random q, k, v (1, 2, length, dim) under a causal (or causal same-segment) mask."""
    gen = torch.Generator().manual_seed(length * 1000 + dim)
    # distinct q, k, v: flex(q, q, q) crashes in dynamo (TypeError) once flex has run with a
    # tensor-capturing mask_mod in this process (torch 2.13; see tests/test_attention.py)
    q, k, v = (torch.randn(1, 2, length, dim, generator=gen).to(device) for _ in range(3))
    seg = (torch.arange(length, device=device) * 3) // length  # three segments
    if segments:
        def mask_mod(b, h, qi, kv):
            return (qi >= kv) & (seg[qi] == seg[kv])
    else:
        def mask_mod(b, h, qi, kv):
            return qi >= kv
    bm = create_block_mask(mask_mod, 1, None, length, length, device=device)
    out = _flex()(q, k, v, block_mask=bm)
    dense = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    if segments:
        dense = dense & (seg[:, None] == seg[None, :])
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense)
    return float((out - ref).abs().max())
