"""Our attention dispatcher, registered through transformers' ``AttentionInterface``.

The mask we pass decides the kernel: a ``BlockMask`` runs FlexAttention (compiled once, compile
count tracked), a dense tensor runs SDPA. No model code is patched: every model that uses the
AttentionInterface picks this up via ``attn_implementation="selfensemble"``.

An optional ``selfensemble_score_mod`` keyword (passed to ``model(...)``; transformers forwards
extra keywords to the attention function) adds a score bias in the flex path.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

ATTN_IMPLEMENTATION = "selfensemble"
_registered = False
_compiled_flex: Callable | None = None
COMPILE_FLEX = True  # tests may switch to eager flex for tiny shapes


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
        import torch._dynamo.config as dynamo_config

        # Past the recompile limit dynamo silently runs a ~100x slower path: make that an error instead.
        dynamo_config.fail_on_recompile_limit_hit = True
        _compiled_flex = torch.compile(flex_attention, dynamic=None)
    return _compiled_flex


def selfensemble_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    selfensemble_score_mod: Callable | None = None,
    selfensemble_score_scale: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """query (B, Hq, Lq, D), key/value (B, Hkv, Lkv, D) → output (B, Lq, Hq, D)."""
    from torch.nn.attention.flex_attention import BlockMask

    if isinstance(attention_mask, BlockMask):
        score_mod = selfensemble_score_mod
        if softcap is not None:
            inner = score_mod

            def score_mod(score, b, h, q, kv):  # noqa: F811 - softcap first, then our bias
                score = softcap * torch.tanh(score / softcap)
                return inner(score, b, h, q, kv) if inner is not None else score

        out = _flex()(query, key, value, block_mask=attention_mask, score_mod=score_mod,
                      scale=scaling, enable_gqa=query.shape[1] != key.shape[1])
        return out.transpose(1, 2).contiguous(), None
    if attention_mask is None:
        raise RuntimeError("selfensemble attention needs an explicit mask (BlockMask or dense tensor).")
    if softcap is not None:
        raise NotImplementedError("attention softcapping is only supported on the flex path")
    mask = attention_mask[:, :, :, : key.shape[-2]]
    if selfensemble_score_scale is not None:  # dense twin of a multiplicative score_mod (fusion temperature)
        out = scaled_score_attention(query, key, value, mask, selfensemble_score_scale[:, :, :, : key.shape[-2]], scaling)
        return out.transpose(1, 2).contiguous(), None
    # enable_gqa shares KV heads without copying them: repeat_interleave of the whole cache was
    # about a third of CPU decode time (SmolLM2, 3 KV heads for 9 query heads)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                                           enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


def scaled_score_attention(query, key, value, bias, mult, scaling: float | None) -> torch.Tensor:
    """softmax(q.k·scaling·mult + bias) v, for per-(query, key) multipliers SDPA cannot take.

    query (B, Hq, Lq, D), key/value (B, Hkv, Lk, D), bias/mult broadcastable to (B, 1, Lq, Lk)
    → (B, Hq, Lq, D). Only used when a fusion temperature is set.
    """
    rep = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(rep, dim=1), value.repeat_interleave(rep, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = (query @ key.transpose(-1, -2)) * scale * mult + bias
    return torch.softmax(scores.float(), dim=-1).to(value.dtype) @ value


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


def flex_available(device: torch.device | str = "cpu") -> tuple[bool, str]:
    """Whether (compiled) FlexAttention runs on ``device``, checked on a tiny problem against SDPA."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask
    except ImportError as err:  # torch < 2.5
        return False, f"torch {torch.__version__} has no FlexAttention ({err})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # distinct q, k, v: flex(q, q, q) crashes in dynamo (TypeError) once flex has run with a
            # tensor-capturing mask_mod in this process (torch 2.13; see tests/test_attention.py)
            q, k, v = (torch.randn(1, 2, 40, 16, device=device) for _ in range(3))
            bm = create_block_mask(lambda b, h, qi, kv: qi >= kv, 1, None, 40, 40, device=device)
            out = _flex()(q, k, v, block_mask=bm)
            ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        if not torch.allclose(out, ref, atol=1e-4):
            return False, "compiled FlexAttention disagrees with SDPA on a probe"
    except Exception as err:  # noqa: BLE001 - reported to the caller, never swallowed silently
        return False, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return True, "ok"
