"""Per-field metadata that lets a config dataclass declare its own command-line flag.

A config field says once what it means to a user (help text, allowed values, least value, the help
panel it belongs to); ``selfensemble.cli.config_flags`` turns those fields into typer options, so every
command that takes the config gets the same flags, as vLLM's ``EngineArgs.add_cli_args`` does. The
dataclass keeps its own defaults: the generated options default to None and only the values a user
typed reach the constructor. Imports nothing but errors (the config layer's rule).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

from selfensemble.errors import ConfigError

#: The metadata key a field's flag description lives under.
KEY = "cli"


def flag(help: str, *, panel: str, choices: Sequence[str] | None = None, min: float | None = None,
         name: str | None = None) -> dict[str, Any]:
    """``dataclasses.field(metadata=flag(...))``: the field's command-line flag.

    ``help``: the flag's help text (the allowed ``choices`` are appended as 'a | b | c');
    ``panel``: the rich help panel that groups it; ``choices``: the allowed values (checked by
    :func:`check_fields` in the dataclass, so the library and the CLI give the same message);
    ``min``: the least value (checked by :func:`check_fields` too; typer then rejects a smaller one as a usage error naming the flag);
    ``name``: the flag when it is not ``--field-name`` (a bool gets ``--name/--no-name``).
    """
    shown = f"{help} ({' | '.join(choices)})" if choices else help
    return {KEY: {"help": shown, "panel": panel, "choices": tuple(choices) if choices else None, "min": min,
                  "name": name}}


def cli_fields(cls: type) -> Iterator[tuple[dataclasses.Field, dict[str, Any]]]:
    """(field, its flag metadata) for every field of the dataclass ``cls`` that declares a flag."""
    for f in dataclasses.fields(cls):
        if KEY in f.metadata:
            yield f, f.metadata[KEY]


def flag_name(f: dataclasses.Field) -> str:
    """The field's flag without dashes, e.g. ``fusion-temperature``."""
    return f.metadata[KEY]["name"] or f.name.replace("_", "-")


def default_of(f: dataclasses.Field) -> Any:
    """The value the dataclass gives ``f`` when it is not passed."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ConfigError(f"{f.name} has no default, so it cannot be an optional flag")


def check_fields(config: Any) -> None:
    """Every field of ``config`` that declares choices holds one of them, and every one that declares
    a least value is at least that (None passes: "not set"); raises ConfigError naming the field."""
    for f, meta in cli_fields(type(config)):
        value = getattr(config, f.name)
        if value is None:
            continue
        if meta["choices"] and value not in meta["choices"]:
            raise ConfigError(f"Unknown {f.name} {value!r}; use one of {', '.join(meta['choices'])}.")
        if meta["min"] is not None and not value >= meta["min"]:  # `not >=`: NaN fails too
            raise ConfigError(f"{f.name} must be >= {meta['min']:g}, got {value}")
