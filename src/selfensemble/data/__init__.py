"""Dataset loaders; each yields a Dataset of Items (see base.py).

`load_dataset(name, path, ...)` is the one entry point the CLI and library use; `DATASETS` lists
the names it accepts. Loaders live in small modules and are imported only when asked for.

May import: config, errors, fileio, scoring (tests/test_import_graph.py checks every import, lazy ones included).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import SelfEnsembleError, did_you_mean
from .base import Dataset, Example, Item

__all__ = ["DATASETS", "Dataset", "Example", "Item", "default_data_dir", "load_dataset"]

DATA_DIR_ENV = "SELFENSEMBLE_DATA_DIR"

# name -> (module, function); modules are imported lazily so `import selfensemble.data` stays cheap.
_LOADERS: dict[str, tuple[str, str]] = {
    "webqa": ("webqa", "load_webqa"),
    "pararel": ("pararel", "load_pararel"),
    "myriadlama": ("myriadlama", "load_myriadlama"),
    "jsonl": ("tabular", "load_jsonl"),
    "csv": ("tabular", "load_csv"),
}
DATASETS: list[str] = list(_LOADERS)


def default_data_dir() -> Path | None:
    """Where the shared data lives: $SELFENSEMBLE_DATA_DIR, else a `shared/data` folder found by
    walking up from the current directory or from this package's repository, else None.

    The env var wins even when the folder is missing, so a typo there surfaces as a clear
    "not found" error instead of silently falling back to something else.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    starts = [Path.cwd().resolve(), Path(__file__).resolve().parents[3]]
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "data"
            if candidate.is_dir():
                return candidate
    return None


def load_dataset(
    name: str,
    path: str | Path | None = None,
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    **options: Any,
) -> Dataset:
    """Load dataset `name` ("webqa", "pararel", "myriadlama", "jsonl", "csv").

    `path` overrides the default location (the shared data folder or the hub); `split` picks
    "test" items (few-shot examples always come from the train side); `limit` caps the items;
    `seed` fixes the train/test split and any sampling. Loader-specific `options` are checked:
    an unknown one is an error rather than silently ignored.
    """
    if name not in _LOADERS:
        raise SelfEnsembleError(
            f"Unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}.{did_you_mean(name, DATASETS)}"
        )
    module, func = _LOADERS[name]
    loader: Callable[..., Dataset] = getattr(importlib.import_module(f".{module}", __name__), func)
    return loader(path, split=split, limit=limit, seed=seed, data_dir=default_data_dir(), **options)
