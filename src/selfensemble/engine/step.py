"""The static decode step: every token a row adds after its prompt, with masks built once per answer.

After the prefill, each row's KV cache holds its prompt in slots 0..S-1 (S = cached prefix + row
length) and has room up to its capacity K; the answer's tokens go to slots S, S+1, … . Everything a
new token's attention needs is laid out once, for all K slots, when decoding starts
(:class:`StepMasks`), as gpt-fast lays out its causal mask once and indexes it by ``input_pos``:

  bias     (B, K)  the prompt's keys as a generated token sees them (masks.decode_terms: -inf on
                   padding, attention fusion's bias on paraphrase keys); 0 on every answer slot
  scale    (B, K)  attention fusion's temperature multiplier (None when it is off); 1 on answer slots
  key_pos  (B, K)  the position id of every slot (prompt positions, then next_position + j), for
                   sliding-window layers
  future   (K-S, K) 0 on the slots written by answer step j or before, -inf after
  slots    (K-S,)  the slot answer step j writes: S + j (a tensor, so a compiled step never sees S)

Step j's token sees ``bias + future[j]``, is written at slot S + j (``GrowingLayer`` writes at the
given slots and hands attention the whole buffer) and attends over all K slots: every shape is the
same at every step, so the step can be compiled (``torch.compile``; CUDA graphs with
``mode="reduce-overhead"``). Teacher-forced scoring (loglik) feeds m tokens at once through the
same tables (steps 0..m-1). Dropping finished rows keeps the rows of every table that stay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from selfensemble.engine.attention import masks
from selfensemble.engine.attention.dispatch import WindowMasks
from selfensemble.engine.packing import PackedBatch
from selfensemble.errors import SelfEnsembleError


@dataclass(frozen=True)
class StepMasks:
    """The masks of every answer slot of a batch, built once (see the module docstring for shapes)."""

    bias: torch.Tensor
    scale: torch.Tensor | None
    key_pos: torch.Tensor
    future: torch.Tensor
    slots: torch.Tensor

    @classmethod
    def build(cls, batch: PackedBatch, terms: tuple[torch.Tensor, torch.Tensor] | None, capacity: int) -> StepMasks:
        """Tables for ``batch`` after its prefill, for a cache of ``capacity`` slots per row.

        ``terms``: attention fusion's per-row (multiplier, bias) (``masks.AttentionFusion.row_terms``)
        or None. Example: 1 row, prompt slots [pad, a, b], capacity 5 → bias [-inf, 0, 0, 0, 0],
        future [[0, 0, 0, 0, -inf], [0, 0, 0, 0, 0]].
        """
        scale, bias = masks.decode_terms(batch, *(terms or (None, None)))  # (B, S) each
        B, start = bias.shape
        if capacity <= start:
            raise ValueError(f"a cache of {capacity} slots has no room after a {start}-slot prompt")
        dev, tail = bias.device, capacity - start
        bias = torch.cat([bias, torch.zeros(B, tail, device=dev)], dim=1)
        # no fusion temperature: no score multiplier at all (SDPA then runs unchanged)
        scale = None if terms is None or not bool((terms[0] != 1).any()) else \
            torch.cat([scale, torch.ones(B, tail, device=dev)], dim=1)
        answer_pos = batch.next_position[:, None] + torch.arange(tail, device=dev)[None, :]
        key_pos = torch.cat([masks.key_positions(batch), answer_pos], dim=1)
        slots = torch.arange(capacity, device=dev)
        written = start + torch.arange(tail, device=dev)  # the slot step j writes
        future = torch.zeros(tail, capacity, device=dev).masked_fill(slots[None, :] > written[:, None], -math.inf)
        return cls(bias, scale, key_pos, future, written)

    @property
    def steps(self) -> int:
        """How many answer tokens fit: capacity - prompt slots."""
        return self.future.shape[0]

    def rows(self, keep: torch.Tensor) -> StepMasks:
        """Only rows ``keep`` (B',) of every per-row table (finished rows dropped, or rows copied)."""
        return StepMasks(self.bias[keep], None if self.scale is None else self.scale[keep], self.key_pos[keep],
                         self.future, self.slots)

    def at(self, steps: torch.Tensor, positions: torch.Tensor, dtype: torch.dtype):
        """(mask (B, 1, n, K), score scale (B, 1, 1, K) or None, WindowMasks) of answer steps ``steps``
        (n,) long, whose tokens sit at ``positions`` (B, n)."""
        add = self.bias[:, None, :] + self.future.index_select(0, steps)[None]  # (B, n, K)
        scale = None if self.scale is None else self.scale[:, None, None, :].to(dtype)
        key_pos = self.key_pos

        def window(w: int) -> torch.Tensor:  # sliding layers: keys w or more positions back are out
            far = positions[:, :, None] - key_pos[:, None, :] >= w
            return add.masked_fill(far, -math.inf)[:, None].to(dtype)

        return add[:, None].to(dtype), scale, WindowMasks(window)


def decode_forward(model, tokens: torch.Tensor, positions: torch.Tensor, steps: torch.Tensor, cache,
                   step_masks: StepMasks) -> torch.Tensor:
    """Logits (B, n, vocab) of tokens (B, n) fed as answer steps ``steps`` (n,) at ``positions`` (B, n).

    Written to cache slots ``start + steps``; every shape depends only on B, n and the capacity K,
    never on the step: this is the function ``--compile`` compiles.
    """
    mask, scale, windows = step_masks.at(steps, positions, model.dtype)
    extra = {"selfensemble_score_scale": scale} if scale is not None else {}
    out = model(input_ids=tokens, position_ids=positions, attention_mask=mask, cache=cache, use_cache=True,
                selfensemble_windows=windows, selfensemble_slots=step_masks.slots.index_select(0, steps), **extra)
    return out.logits


class CompiledStep:
    """``decode_forward`` under ``torch.compile`` (``mode="reduce-overhead"`` on CUDA: CUDA graphs).

    Shapes are static within an answer; a new batch size or capacity compiles again (dynamo marks
    the sizes that changed dynamic after the first), up to ``RECOMPILE_LIMIT`` graphs, past which
    the call fails loudly instead of dynamo's silent fall back to eager. A compile failure is a
    SelfEnsembleError naming the cause: ``--compile`` was asked for, so it never degrades silently.
    """

    RECOMPILE_LIMIT = 64

    def __init__(self, device_type: str, backend: str = "inductor"):
        self.device_type = device_type
        self.mode = "reduce-overhead" if device_type == "cuda" and backend == "inductor" else None
        # backend: "inductor" (what --compile runs); tests also use "aot_eager" (dynamo's capture of the
        # step without inductor's code generation, which takes minutes per graph on a small CPU)
        self._fn = torch.compile(decode_forward, backend=backend, mode=self.mode, dynamic=None)

    def __call__(self, model, tokens, positions, steps, cache, step_masks: StepMasks) -> torch.Tensor:
        import torch._dynamo.config as dynamo_config

        if self.device_type == "cuda":
            _mark_static(cache)
            torch.compiler.cudagraph_mark_step_begin()
        try:
            with dynamo_config.patch(recompile_limit=self.RECOMPILE_LIMIT, fail_on_recompile_limit_hit=True):
                out = self._fn(model, tokens, positions, steps, cache, step_masks)
        except torch.OutOfMemoryError:
            raise
        except Exception as err:
            if not _is_compile_error(err):
                raise
            first = str(err).splitlines()[0] if str(err) else ""
            raise SelfEnsembleError(f"compile: compiling the decode step failed ({type(err).__name__}: "
                                    f"{first}); run without compile.", arguments=("compile",)) from err
        # CUDA graphs reuse their output buffers at the next replay: hand the caller its own copy
        return out.clone() if self.mode == "reduce-overhead" else out


def _is_compile_error(err: BaseException) -> bool:
    try:
        from torch._dynamo.exc import TorchDynamoException
        from torch._inductor.exc import InductorError
    except ImportError:  # pragma: no cover - older torch
        return False
    return isinstance(err, TorchDynamoException | InductorError)


def _mark_static(cache) -> None:
    """Tell CUDA graphs the KV buffers (written in place by every step) keep their address within an answer."""
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "_k", None), getattr(layer, "_v", None)):
            if t is not None and not hasattr(t, "_dynamo_static_input_type"):
                torch._dynamo.mark_static_address(t, guard=False)
