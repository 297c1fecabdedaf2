"""Model loading: specs, random architectures, our attention dispatcher, clear errors."""

from __future__ import annotations

import pytest
import torch

from conftest import ARCHS
from selfensemble.attention import ATTN_IMPLEMENTATION
from selfensemble.errors import SelfEnsembleError, did_you_mean
from selfensemble.models import RANDOM_CONFIGS, load_model, resolve_device, resolve_dtype


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
        with pytest.raises(SelfEnsembleError, match="no CUDA device"):
            resolve_device("cuda")


def test_did_you_mean():
    assert did_you_mean("qwen", ["llama", "qwen2"]) == " Did you mean 'qwen2'?"
    assert did_you_mean("zzz", ["llama", "qwen2"]) == ""
