"""What every command shares: the app, help texts, list parsing, engine construction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from selfensemble.config import defaults
from selfensemble.config.gate import DEFAULT_MIN_SIMILARITY
from selfensemble.errors import SelfEnsembleError
from selfensemble.methods.registry import METHODS

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Ask one question through N paraphrases and fuse them into one answer.")

MODEL_HELP = "smollm2-135m (embedded default), gemma3-270m (extra gemma3), a hub id, a local folder, a .gguf path, or random:<arch>."
ATTENTION_HELP = ("flex (compiled FlexAttention) | sdpa (same mask, dense) | auto (flex, loud fallback to sdpa). "
                  "Default: sdpa on CPU, auto on CUDA.")
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


RESCALE_HELP = "flex: down-weight paraphrase keys by 1/N for fusion tokens (fusion scale × 1/N)."
TEMPERATURE_HELP = ("flex (APE-style): fusion tokens score paraphrase keys with score/T; T < 1 sharpens. "
                    "1 = off; one-prompt rows and other methods are untouched.")
SCALE_HELP = "flex (APE-style): multiply the paraphrases' attention mass by S (adds log S to their scores)."
MIN_SIMILARITY_HELP = ("Gate: least cosine similarity to the original (default: "
                       + ", ".join(f"{v} for {k}" for k, v in DEFAULT_MIN_SIMILARITY.items()) + ").")


COMPILE_HELP = ("torch.compile the decode step (static shapes; CUDA graphs on CUDA). Off by default: it "
                "compiles for minutes on a CPU, and no CUDA timing exists yet (benchmarks/README.md).")
LAYOUT_HELP = "flex layout: shared (one prefix) | full (prefix per paraphrase)"
POSITIONS_HELP = "flex positions: restart | right | sequential"


def flex_option(knob: str, *decls: str, help: str) -> Any:
    """A typer option for a flex knob whose default is read from defaults.py when the command runs
    (so no command carries its own copy; tests/test_entry_defaults.py checks every command)."""
    value = defaults.flex()[knob]
    shown = f"--{'' if value else 'no-'}{knob}" if isinstance(value, bool) else str(value)
    return typer.Option(..., *decls, default_factory=defaults.factory(knob), help=help, show_default=shown)


def compile_option() -> Any:
    """``--compile/--no-compile``: EngineConfig.compile, the same flag on every command that builds an engine."""
    return typer.Option(False, "--compile/--no-compile", help=COMPILE_HELP)


def engine_config(attention: str | None = None, batch_size: int = 8, **flex: Any):
    """The EngineConfig of a command, checked before any model loads; flex knobs not given come from
    defaults.py (``flex``: any of defaults.FLEX_KNOBS, e.g. positions="restart", or another
    EngineConfig field such as compile)."""
    from selfensemble.config.engine import EngineConfig

    return EngineConfig(attention=attention, batch_size=batch_size, **flex)


def make_engine(model: str, device: str = "cpu", dtype: str = "auto", attention: str | None = None, *,
                batch_size: int = 8, seed: int = 0, device_map: str | None = None, revision: str | None = None,
                trust_remote_code: bool = False, **flex: Any):
    """Load ``model`` into an Engine through engine_factory.build_engine (the one factory every entry
    point uses); the config (``engine_config``) is validated first, so a bad option fails before the
    slow load."""
    from selfensemble.config.load import LoadSpec
    from selfensemble.engine.factory import build_engine

    cfg = engine_config(attention, batch_size, **flex)
    return build_engine(LoadSpec(model=model, device=device, dtype=dtype, seed=seed, device_map=device_map,
                                 revision=revision, trust_remote_code=trust_remote_code), cfg)
