"""What every command shares: the app, help texts, list parsing, engine construction."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from selfensemble.config.gate import DEFAULT_MIN_SIMILARITY
from selfensemble.errors import SelfEnsembleError
from selfensemble.methods.registry import METHODS

if TYPE_CHECKING:
    from selfensemble.config.engine import EngineConfig

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Ask one question through N paraphrases and fuse them into one answer.")

MODEL_HELP = "smollm2-135m (embedded default), gemma3-270m (extra gemma3), a hub id, a local folder, a .gguf path, or random:<arch>."
DEVICE_MAP_HELP = ("Place the model with accelerate, e.g. 'auto' (spread over all visible GPUs, as for 7B+ "
                   "models); --device is then ignored.")
METHOD_HELP = " | ".join(METHODS)  # the registered methods (method_registry imports no torch)


def parse_list(text: str | None, what: str, cast: Callable[[str], Any] = str) -> list | None:
    """'a, b,c' → ['a', 'b', 'c'] (cast each); None stays None; a bad item is a one-line user error."""
    if text is None:
        return None
    try:
        values = [cast(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError as err:
        kind = {int: "integers", float: "numbers"}.get(cast, "values")
        raise SelfEnsembleError(f"{what} takes comma-separated {kind}, got {text!r}.") from err
    if not values:
        raise SelfEnsembleError(f"{what} is empty.")
    return values


MIN_SIMILARITY_HELP = ("Gate: least cosine similarity to the original (default: "
                       + ", ".join(f"{v} for {k}" for k, v in DEFAULT_MIN_SIMILARITY.items()) + ").")


def make_engine(model: str, device: str = "cpu", dtype: str = "auto", config: EngineConfig | None = None, *,
                seed: int = 0, device_map: str | None = None, revision: str | None = None,
                trust_remote_code: bool = False):
    """Load ``model`` into an Engine through engine.factory.build_engine (the one factory every entry
    point uses) with ``config`` (None: the defaults), which the command built, and so checked, before
    the slow load."""
    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.load import LoadSpec
    from selfensemble.engine.factory import build_engine

    return build_engine(LoadSpec(model=model, device=device, dtype=dtype, seed=seed, device_map=device_map,
                                 revision=revision, trust_remote_code=trust_remote_code), config or EngineConfig())
