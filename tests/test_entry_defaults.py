"""Every command takes every EngineConfig flag from the one declaration on the dataclass, with the
dataclass's default, and every entry point runs the measured flex default of defaults.py.

Each entry point is driven as a user drives it (the CLI through typer, the Python API by its
constructors) until the engine would be built; the EngineConfig it hands over is captured and no
model loads.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from selfensemble.config import defaults
from selfensemble.config.engine import EngineConfig


class Captured(Exception):
    """Raised where the engine would be built, carrying its EngineConfig."""

    def __init__(self, config: EngineConfig):
        super().__init__("captured")
        self.config = config


class FakeEngine:
    def __init__(self, lm, config: EngineConfig | None = None):
        raise Captured(config if config is not None else EngineConfig())


@pytest.fixture
def capture(monkeypatch):
    """Stop every path at its engine: no model, no tokenizer, no harness index is loaded."""
    from selfensemble.cli import _register_commands
    from selfensemble.engine import engine as engine_module
    from selfensemble.engine import models
    from selfensemble.pipeline.backends import BackendConfig, open_backend

    _register_commands()
    real_load = models.load_model

    @functools.wraps(real_load)  # the same signature: lm-eval sorts its options by it
    def load_model(*args, **kwargs):
        return object()

    monkeypatch.setattr(models, "load_model", load_model)
    monkeypatch.setattr(models, "load_tokenizer", lambda *a, **k: object())
    monkeypatch.setattr(engine_module, "Engine", FakeEngine)

    def plan_rows(method, parts, weights, cfg, cached_prefix):  # the mask picture's plan
        raise Captured(cfg)

    monkeypatch.setattr("selfensemble.engine.rows.plan_rows", plan_rows)
    monkeypatch.setattr("selfensemble.engine.attention.maskplot.build_parts", lambda *a, **k: None)
    # run / demo / interactive: the experiment opens its backend from the run's LoadSpec and EngineConfig
    monkeypatch.setattr("selfensemble.cli.run.run_experiment", lambda cfg, *a, **k: open_backend(
        BackendConfig(), cfg.load, cfg.engine, Console(quiet=True)))

    def run_benchmark(config):  # bench: the engine of the first (default) flex layout
        from selfensemble.bench.sections import engine_config

        raise Captured(engine_config(config, 1, config.layouts[0], compile="compiled" in config.decode_modes))

    monkeypatch.setattr("selfensemble.bench.run_benchmark", run_benchmark)
    if importlib.util.find_spec("lm_eval") is not None:
        monkeypatch.setattr("selfensemble.integrations.lm_eval.task_manager", lambda *a, **k: None)


def _cli(*args: str, stdin: str | None = None) -> EngineConfig:
    from selfensemble.cli import app

    result = CliRunner().invoke(app, list(args), input=stdin)
    assert isinstance(result.exception, Captured), (args, result.output, result.exception)
    return result.exception.config


def _needs_serve() -> None:
    """`serve` (and the page's mask) need the serve extra; without it they skip and say so."""
    for module in ("fastapi", "uvicorn"):
        pytest.importorskip(module, reason="the serve extra is not installed (pip install 'selfensemble[serve]')")


def _serve(*args: str) -> EngineConfig:
    _needs_serve()
    return _cli("serve", *args)


def _api() -> EngineConfig:
    return EngineConfig()


def _page(tmp: Path) -> EngineConfig:
    """The page's mask picture (GET /v1/mask.png): serve's engine config drawn by maskplot.layout_row."""
    from selfensemble.engine.attention.maskplot import layout_row

    served = _serve("--model", "random:llama")
    with pytest.raises(Captured) as drawn:
        layout_row(None, ["Q?"], None, served.layout, served.positions)
    return drawn.value.config


def _lm_eval(tmp: Path) -> EngineConfig:
    pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
    return _cli("lm-eval", "--tasks", "anything", "--model", "random:llama", "--out", str(tmp))


def _run_config_api() -> EngineConfig:
    """A RunConfig built without an engine: its EngineConfig is built (and reads defaults.py) then."""
    from selfensemble.config.run import RunConfig

    return RunConfig().engine


ENTRY_POINTS = {
    "python-api": lambda tmp: _api(),
    "run-config-api": lambda tmp: _run_config_api(),
    "ask": lambda tmp: _cli("ask", "Q?", "-p", "R?", "--model", "random:llama"),
    "run": lambda tmp: _cli("run", "--model", "random:llama", "--method", "flex", "--out", str(tmp)),
    "bench": lambda tmp: _cli("bench", "--tiny"),
    "serve": lambda tmp: _serve("--model", "random:llama"),
    "page-mask": _page,
    "lm-eval": _lm_eval,
    "mask": lambda tmp: _cli("mask", "Q?", "-p", "R?", "--out", str(tmp / "m.png")),
    "interactive-ask": lambda tmp: _cli("interactive", stdin="ask\nrandom:llama\nflex\n"),
    "interactive-run": lambda tmp: _cli("interactive", stdin=f"run\nrandom:llama\njsonl\n{tmp}/x.jsonl\n"
                                                             f"origin,flex\n3\n2\nper-item\n{tmp}\n"),
    "demo": lambda tmp: _cli("demo", "--out", str(tmp)),
}


def _flex(cfg: EngineConfig) -> dict:
    return {k: getattr(cfg, k) for k in defaults.FLEX_KNOBS}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_entry_point_runs_the_measured_flex_default(entry, capture, tmp_path):
    assert _flex(ENTRY_POINTS[entry](tmp_path)) == defaults.flex()


def test_options_given_still_win(capture):
    cfg = _serve("--model", "random:llama", "--positions", "restart", "--no-rescale")
    assert (cfg.positions, cfg.rescale) == ("restart", False)


# -- every command that takes an engine config has a flag for each of its fields ------------------

ENGINE_FIELDS = tuple(f.name for f in dataclasses.fields(EngineConfig))  # all of them: one without a flag fails
#: Per command: how to reach its engine, and the fields it takes as flags (serve sizes its batches with
#: --max-batch; mask draws layout and positions; bench sweeps --layouts and --batch-sizes instead).
COMMANDS = {
    "ask": (lambda tmp: ["ask", "Q?", "-p", "R?", "--model", "random:llama"], ENGINE_FIELDS),
    "run": (lambda tmp: ["run", "--model", "random:llama", "--method", "flex", "--out", str(tmp)], ENGINE_FIELDS),
    "serve": (lambda tmp: ["serve", "--model", "random:llama"], tuple(f for f in ENGINE_FIELDS if f != "batch_size")),
    "lm-eval": (lambda tmp: ["lm-eval", "--tasks", "anything", "--model", "random:llama", "--out", str(tmp)],
                ENGINE_FIELDS),
    "mask": (lambda tmp: ["mask", "Q?", "-p", "R?", "--out", str(tmp / "m.png")], ("layout", "positions")),
    "bench": (lambda tmp: ["bench", "--tiny"], ("attention", "positions", "rescale", "fusion_temperature",
                                                "fusion_scale", "compile", "prefix_cache_mb")),
}
CASES = [(c, f) for c, (_, names) in COMMANDS.items() for f in names]


def _needs(command: str) -> None:
    if command == "serve":
        _needs_serve()
    if command == "lm-eval":
        pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")


def _other_value(name: str) -> tuple[list[str], object]:
    """(the flag and its argument, the value it gives): a valid value unlike the dataclass's default."""
    f = {f.name: f for f in dataclasses.fields(EngineConfig)}[name]
    flag, default = "--" + name.replace("_", "-"), f.default
    if isinstance(default, bool):
        return [flag if not default else flag.replace("--", "--no-", 1)], not default
    choices = {"attention": ("auto", "flex", "sdpa"), "layout": ("shared", "full"),
               "positions": ("restart", "right", "sequential")}
    if name in choices:
        value = [c for c in choices[name] if c != default][-1]
        return [flag, value], value
    return [flag, str(default * 2)], default * 2


@pytest.mark.parametrize("command, name", CASES)
def test_every_engine_field_is_a_flag_that_reaches_the_engine(command, name, capture, tmp_path):
    """The flag --<field> exists, defaults to the dataclass's value, and a value given reaches the
    EngineConfig the engine is built with (and nothing else changes)."""
    import typer

    from selfensemble.cli import app

    _needs(command)
    args, names = COMMANDS[command][0](tmp_path), COMMANDS[command][1]
    options = {o for p in typer.main.get_command(app).commands[command].params for o in p.opts}
    assert "--" + name.replace("_", "-") in options, f"{command} has no flag for EngineConfig.{name}"
    flag, value = _other_value(name)
    plain, given = _cli(*args), _cli(*args, *flag)
    assert getattr(plain, name) == getattr(EngineConfig(), name)
    assert getattr(given, name) == value
    assert {k: getattr(given, k) for k in names if k != name} == {k: getattr(plain, k) for k in names if k != name}


def test_serve_sizes_its_engine_batches_with_max_batch(capture):
    assert _serve("--model", "random:llama", "--max-batch", "3").batch_size == 3


# -- one engine factory: every entry point that builds an engine goes through engine_factory ---------


class Built(Exception):
    """Raised by the patched factory: the entry point reached it, with this spec and config."""

    def __init__(self, spec, config=None):
        super().__init__("built")
        self.spec, self.config = spec, config


@pytest.fixture
def factory(monkeypatch, tmp_path):
    """engine_factory.build_engine / load raise Built; anything that builds methods.Engine or loads a
    model another way meets FakeEngine / a failing load_model instead, so it cannot pass."""
    from selfensemble.cli import _register_commands
    from selfensemble.engine import engine as engine_module
    from selfensemble.engine import factory as engine_factory
    from selfensemble.engine import models

    _register_commands()

    def build_engine(spec, config):
        raise Built(spec, config)

    def load(spec):
        raise Built(spec)

    def elsewhere(*a, **k):
        raise AssertionError("a model was loaded outside engine_factory")

    monkeypatch.setattr(engine_factory, "build_engine", build_engine)
    monkeypatch.setattr(engine_factory, "load", load)
    monkeypatch.setattr(models, "load_model", elsewhere)
    monkeypatch.setattr(engine_module, "Engine", FakeEngine)
    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "x.jsonl").write_text('{"id": "a", "question": "What is X?", "answers": ["x"]}\n')
    if importlib.util.find_spec("lm_eval") is not None:
        monkeypatch.setattr("selfensemble.integrations.lm_eval.task_manager", lambda *a, **k: None)


def _built(*args: str, stdin: str | None = None) -> Built:
    from selfensemble.cli import app

    result = CliRunner().invoke(app, list(args), input=stdin)
    assert isinstance(result.exception, Built), (args, result.output, result.exception)
    return result.exception


def _ray_worker(tmp: Path) -> Built:
    from selfensemble.config.load import LoadSpec
    from selfensemble.pipeline.backends.ray import EngineWorker

    worker = EngineWorker(LoadSpec("random:llama"), EngineConfig(batch_size=3), threads=1)
    with pytest.raises(Built) as built:  # the actor raises a failed build with its first batch
        worker.answer([0], [], None, "origin", None)
    return built.value


def _lm_eval_built(tmp: Path) -> Built:
    pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
    return _built("lm-eval", "--tasks", "anything", "--model", "random:llama", "--out", str(tmp))


def _jsonl(tmp: Path) -> list[str]:
    return ["--dataset", "jsonl", "--data-path", str(tmp / "x.jsonl")]


#: Every entry point that builds an engine (mask and the page's picture load a tokenizer only;
#: the Python API's Engine(lm, config) wraps a model the caller loaded).
FACTORY_ENTRY_POINTS = {
    "ask": lambda tmp: _built("ask", "Q?", "-p", "R?", "--model", "random:llama"),
    "run": lambda tmp: _built("run", *_jsonl(tmp), "--model", "random:llama", "--method", "flex", "--out", str(tmp)),
    "paraphrase": lambda tmp: _built("paraphrase", *_jsonl(tmp), "--model", "random:llama",
                                     "--out", str(tmp / "p.jsonl")),
    "bench": lambda tmp: _built("bench", "--tiny"),
    "serve": lambda tmp: (_needs_serve(), _built("serve", "--model", "random:llama"))[1],
    "lm-eval": _lm_eval_built,
    "interactive-ask": lambda tmp: _built("interactive", stdin="ask\nrandom:llama\nflex\n"),
    "interactive-run": lambda tmp: _built("interactive", stdin=f"run\nrandom:llama\njsonl\n{tmp}/x.jsonl\n"
                                                               f"origin,flex\n3\n2\nper-item\n{tmp}\n"),
    "demo": lambda tmp: _built("demo", "--out", str(tmp), "--model", "random:llama"),
    "ray-worker": _ray_worker,
}


@pytest.mark.parametrize("entry", list(FACTORY_ENTRY_POINTS))
def test_entry_point_builds_its_engine_through_the_factory(entry, factory, tmp_path):
    built = FACTORY_ENTRY_POINTS[entry](tmp_path)
    assert built.spec.model == "random:llama"
    if entry != "bench":  # bench loads once through the factory, then times several configs
        assert _flex(built.config) == defaults.flex()


def test_an_entry_point_that_bypasses_the_factory_fails_the_check(factory):
    """The control: building the engine the old way (load_model + Engine) does not reach Built."""
    from selfensemble.engine import engine as engine_module
    from selfensemble.engine import models

    with pytest.raises(AssertionError, match="outside engine_factory"):
        engine_module.Engine(models.load_model("random:llama"), EngineConfig())


# -- an engine flag is the generated one wherever it appears, never a copy declared by hand ---------


def _engine_flag_fields() -> dict[str, tuple[dataclasses.Field, dict]]:
    from selfensemble.config.fields import cli_fields, flag_name

    return {"--" + flag_name(f): (f, meta) for f, meta in cli_fields(EngineConfig)}


def test_every_engine_flag_on_every_command_is_generated_from_its_field():
    """A command's option named as an EngineConfig flag carries the field's help, panel and shown
    default and defaults to None (only what the user typed reaches the dataclass). A hand-declared
    ``--batch-size`` (``typer.Option(8)``) has default 8 and no help, and fails here."""
    import typer

    from selfensemble.cli import _register_commands, app
    from selfensemble.config.fields import default_of

    _register_commands()
    fields = _engine_flag_fields()
    seen = set()
    for name, command in typer.main.get_command(app).commands.items():
        for param in command.params:
            for opt in set(param.opts) & set(fields):
                f, meta = fields[opt]
                seen.add((name, opt))
                assert param.default is None, f"{name} {opt}: declared by hand (default {param.default!r})"
                assert (param.help, param.rich_help_panel) == (meta["help"], meta["panel"]), (name, opt)
                if not isinstance(default_of(f), bool) and default_of(f) is not None:
                    assert param.show_default == str(default_of(f)), (name, opt, param.show_default)
    assert ("paraphrase", "--batch-size") in seen and ("run", "--batch-size") in seen


def test_paraphrase_sizes_its_writer_engine_with_the_generated_batch_size(factory, tmp_path):
    args = ["paraphrase", *_jsonl(tmp_path), "--model", "random:llama", "--out", str(tmp_path / "p.jsonl")]
    assert _built(*args).config.batch_size == EngineConfig().batch_size
    assert _built(*args, "--batch-size", "3").config.batch_size == 3
    assert _built(*args).config == EngineConfig()  # the flag is its only engine knob; the rest are defaults
