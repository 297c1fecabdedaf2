"""Typer options generated from a config dataclass's fields (``config.fields.flag`` metadata).

``@config_flags("engine", EngineConfig)`` on a command gives it one flag per field that declares
one, and hands the command a built ``EngineConfig`` as its ``engine`` argument: a knob is declared
once, on the dataclass, and every command that takes the config gets the same flag with the same
help, panel and default (as vLLM's ``EngineArgs.add_cli_args``). The options default to None, so
only what the user typed reaches the constructor and the dataclass owns its defaults; the config is
built (and validated) before the command body runs, so a bad value fails before any model loads.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import typing
from collections.abc import Callable, Collection
from typing import Any

import typer

from selfensemble.config.fields import cli_fields, default_of, flag_name
from selfensemble.errors import ConfigError


def config_flags(param: str, cls: type, *, only: Collection[str] | None = None,
                 skip: Collection[str] = ()) -> Callable[[Callable], Callable]:
    """Decorate a typer command (below ``@app.command``) that takes a ``cls`` config as ``param``.

    ``only``: the fields to make flags of (default: every field that declares one); ``skip``: fields
    the command sets another way (``serve`` sizes its batches with ``--max-batch``), left at the
    dataclass's default. The generated flags come after the command's own in its signature, grouped
    in the help panels their fields name.
    """
    chosen = [(f, meta) for f, meta in cli_fields(cls)
              if (only is None or f.name in only) and f.name not in skip]
    if only is not None and (missing := set(only) - {f.name for f, _ in chosen}):
        raise TypeError(f"{cls.__name__} declares no flag for {', '.join(sorted(missing))}")
    hints = typing.get_type_hints(cls)

    def decorate(fn: Callable) -> Callable:
        own = inspect.signature(fn)
        fn_hints = typing.get_type_hints(fn)
        if param not in own.parameters:
            raise TypeError(f"{fn.__name__} has no parameter {param!r} to receive the {cls.__name__}")
        params = [p.replace(annotation=fn_hints.get(p.name, p.annotation))
                  for p in own.parameters.values() if p.name != param]
        taken = {p.name for p in params}
        for f, meta in chosen:
            if f.name in taken:
                raise TypeError(f"{fn.__name__}: its own parameter {f.name!r} hides {cls.__name__}.{f.name}")
            base = _base(hints[f.name])
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=_option(f, meta, base),
                                            annotation=typing.Optional[base]))  # noqa: UP045 (a runtime object)

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            given = {f.name: kwargs.pop(f.name) for f, _ in chosen}
            try:
                kwargs[param] = cls(**{k: v for k, v in given.items() if v is not None})
            except ConfigError as err:  # the library names the argument; the user typed the flag
                raise ConfigError(_with_flags(str(err), [f for f, _ in chosen])) from err
            return fn(*args, **kwargs)

        del command.__wrapped__  # typer reads the signature below, not fn's
        command.__signature__ = own.replace(parameters=params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def _with_flags(message: str, fields: list[dataclasses.Field]) -> str:
    """'top_p must be in (0, 1]' → '--top-p must be in (0, 1]': a field named as the subject of a rule."""
    for f in fields:
        message = re.sub(rf"\b{f.name}\b(?= must)", "--" + flag_name(f), message)
    return message


def _base(hint: Any) -> type:
    """``str | None`` → ``str``; the flag's own type (its None means "not given")."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _option(f: dataclasses.Field, meta: dict[str, Any], base: type) -> Any:
    """The typer option of field ``f``: ``--name`` (a bool: ``--name/--no-name``), default None,
    the dataclass's default shown in the help."""
    name, default = flag_name(f), default_of(f)
    is_bool = base is bool
    decls = [f"--{name}/--no-{name}"] if is_bool else [f"--{name}"]
    shown: str | bool = f"--{'' if default else 'no-'}{name}" if is_bool else (False if default is None else str(default))
    extra = {"min": meta["min"]} if meta["min"] is not None else {}
    return typer.Option(None, *decls, help=meta["help"], rich_help_panel=meta["panel"], show_default=shown, **extra)
