"""Configs that make their own flags: config.fields metadata → cli.config_flags options → a built config."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import typer
from typer.testing import CliRunner

from selfensemble.cli.config_flags import config_flags
from selfensemble.config.fields import check_fields, flag
from selfensemble.config.generation import GenerationConfig
from selfensemble.errors import ConfigError


@dataclass(frozen=True)
class Toy:
    mode: str = field(default="a", metadata=flag("Mode.", panel="Toy", choices=("a", "b")))
    on: bool = field(default=True, metadata=flag("On.", panel="Toy"))
    size: int = field(default=4, metadata=flag("Size.", panel="Toy", min=1))
    limit_mb: float | None = field(default=None, metadata=flag("Limit.", panel="Other"))
    quiet: bool = field(default=False, metadata=flag("Quiet.", panel="Toy", name="hush"))
    internal: int = 7  # no metadata: no flag

    def __post_init__(self):
        check_fields(self)


def _app(**kwargs) -> tuple[typer.Typer, list]:
    seen: list = []
    app = typer.Typer()

    @app.command()
    @config_flags("toy", Toy, **kwargs)
    def go(name: str = typer.Argument("x"), toy: Toy = None):
        seen.append((name, toy))

    @app.command()
    def other():  # a second command, so typer keeps `go` as a subcommand
        pass

    return app, seen


def _run(*args: str, **kwargs) -> tuple[object, list]:
    app, seen = _app(**kwargs)
    return CliRunner().invoke(app, ["go", *args]), seen


def test_no_flag_given_builds_the_dataclass_defaults():
    result, seen = _run("n")
    assert result.exit_code == 0, result.output
    assert seen == [("n", Toy())]


def test_each_flag_reaches_its_field():
    result, seen = _run("--mode", "b", "--no-on", "--size", "9", "--limit-mb", "2.5", "--hush")
    assert result.exit_code == 0, result.output
    assert seen == [("x", Toy(mode="b", on=False, size=9, limit_mb=2.5, quiet=True, internal=7))]


def test_help_shows_every_declared_field_in_its_panel_and_the_dataclass_default():
    app, _ = _app()
    out = CliRunner().invoke(app, ["go", "--help"], env={"COLUMNS": "200"}).output
    for text in ("--mode", "(a | b)", "--on", "--no-on", "--size", "--limit-mb", "--hush", "Toy", "Other",
                 "[default: (a)]", "[default: (--on)]", "[default: (4)]"):
        assert text in out, (text, out)
    assert "--internal" not in out and "--quiet" not in out


def test_bad_values_fail_before_the_command_and_name_the_flag():
    result, seen = _run("--mode", "c")
    assert isinstance(result.exception, ConfigError) and "Unknown mode 'c'" in str(result.exception)
    result2, seen2 = _run("--size", "0")  # typer's own range check: a usage error naming the flag
    assert result2.exit_code == 2 and "--size" in result2.output
    assert seen == seen2 == []


def test_only_and_skip_choose_the_flags():
    app, seen = _app(only=("mode",))
    opts = {o for p in typer.main.get_command(app).commands["go"].params for o in p.opts}
    assert "--mode" in opts and "--size" not in opts
    app, _ = _app(skip=("size",))
    opts = {o for p in typer.main.get_command(app).commands["go"].params for o in p.opts}
    assert "--size" not in opts and "--mode" in opts


def test_a_field_without_a_flag_or_a_clashing_parameter_is_refused():
    with pytest.raises(TypeError, match="internal"):
        config_flags("toy", Toy, only=("internal",))
    with pytest.raises(TypeError, match="hides Toy.size"):
        @config_flags("toy", Toy)
        def clash(size: int = 1, toy: Toy = None):
            pass


@dataclass(frozen=True)
class Rated:
    top_rate: float = field(default=1.0, metadata=flag("Rate.", panel="R"))

    def __post_init__(self):
        if self.top_rate > 1:
            raise ConfigError(f"top_rate must be <= 1, got {self.top_rate}")


def test_config_errors_name_the_flag_the_user_typed():
    app = typer.Typer()

    @app.command()
    @config_flags("rated", Rated)
    def go(rated: Rated = None):
        pass

    @app.command()
    def other():
        pass

    result = CliRunner().invoke(app, ["go", "--top-rate", "2"])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception) == "--top-rate must be <= 1, got 2.0"


@pytest.mark.parametrize("kwargs, match", [({"temperature": 0.0}, "temperature must be a finite number > 0"),
                                           ({"temperature": math.nan}, "temperature must be a finite"),
                                           ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
                                           ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
                                           ({"top_k": -1}, "top_k must be >= 0"),
                                           ({"max_new_tokens": 0}, "max_new_tokens must be >= 1")])
def test_generation_config_checks_its_sampling_knobs(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        GenerationConfig(**kwargs)
    GenerationConfig(temperature=0.5, top_p=1.0, top_k=0, max_new_tokens=1)  # the edges that are allowed
