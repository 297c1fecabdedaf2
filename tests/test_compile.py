"""``--compile``: the decode step under torch.compile answers exactly as the eager step.

Compiling is slow on a small CPU (about 15 s a graph to capture, 1-2 minutes more for inductor's
C++), so every family is checked with dynamo's capture of the step (backend "aot_eager": the same
graph, run without inductor's code generation) and one windowed, softcapped family with the full
inductor compile that ``--compile`` runs. CUDA (CUDA graphs) is checked by benchmarks/checks/gpu_check.sh.
"""

from __future__ import annotations

import pytest

from selfensemble.config.engine import EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.engine import Engine
from selfensemble.engine.queries import Query
from selfensemble.engine.step import CompiledStep
from test_families import FAMILIES

PROMPTS = [["What is the capital of France?", "Which city is France's capital?", "Name the capital of France."],
           ["Who wrote Hamlet?", "Hamlet was written by whom?"]]
GEN = GenerationConfig(max_new_tokens=6, stop_at_newline=False)
# knobs on: the fusion temperature puts a score multiplier in the step (the dense-scores path)
KNOBS = dict(rescale=True, fusion_temperature=0.5)


def compare(lm, fmt, backend: str, methods=("flex",)) -> None:
    """flex (packed rows, attention fusion's score multiplier) by default: one graph per family."""
    eager = Engine(lm, EngineConfig(attention="sdpa", batch_size=2, **KNOBS))
    compiled = Engine(lm, EngineConfig(attention="sdpa", batch_size=2, compile=True, **KNOBS))
    if backend != "inductor":
        compiled._step = CompiledStep("cpu", backend=backend)
    assert compiled.attention_paths == {"prefill": "sdpa-dense", "decode": "sdpa-dense-compiled"}
    queries = [Query(p, fmt) for p in PROMPTS]
    for method in methods:
        want = [a.tokens for a in eager.answer_many(queries, method, GEN)]
        got = compiled.answer_many(queries, method, GEN)
        assert [a.tokens for a in got] == want, method
        assert all(a.attention["decode"] == "sdpa-dense-compiled" for a in got)
        assert max(len(t) for t in want) >= 4


@pytest.mark.slow
@pytest.mark.parametrize("arch", FAMILIES)
def test_captured_step_answers_as_eager(random_lm, fewshot_fmt, arch):
    compare(random_lm(arch), fewshot_fmt, "aot_eager")


@pytest.mark.slow
def test_inductor_compiled_step_answers_as_eager(random_lm, fewshot_fmt):
    compare(random_lm("gemma2"), fewshot_fmt, "inductor", ("flex", "avg"))


def test_compile_is_off_by_default_and_named(random_lm):
    engine = Engine(random_lm("llama"), EngineConfig(attention="sdpa"))
    assert engine.config.compile is False and engine._step is None
    assert engine.attention_paths == {"prefill": "sdpa-dense", "decode": "sdpa-dense"}
