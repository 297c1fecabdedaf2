"""Methods from another package: declared as entry points in the group ``selfensemble.methods``,
loaded the first time their name is asked for (or the methods are listed), then answered like the
built-in ones. tests/plugin_pkg is such a package; it is installed here with pip into a temporary
folder (no network: no dependencies, no build isolation)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from selfensemble.config.engine import EngineConfig
from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.engine import Engine
from selfensemble.engine.prompts import build_parts
from selfensemble.engine.reference import reference_generate
from selfensemble.engine.rows import plan_rows
from selfensemble.errors import ConfigError, SelfEnsembleError
from selfensemble.methods.registry import (
    ENTRY_POINT_GROUP,
    METHODS,
    check_method,
    discover_methods,
    get_method,
    logit_fusion_methods,
    unregister_method,
)

PLUGIN_SRC = Path(__file__).resolve().parent / "plugin_pkg"
PLUGIN_MODULE = "selfensemble_geo_plugin"
PLUGIN_METHODS = ("geo", "last_prompt")
BUILT_IN = ("origin", "per_prompt", "vote", "avg", "max", "weighted_avg", "weighted_max", "select", "flex")
PROMPTS = ["What is the capital of France?", "Which city is the capital of France?", "Name France's capital city."]
GEN = GenerationConfig(max_new_tokens=5, stop_at_newline=False)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """tests/plugin_pkg installed by pip into a fresh folder (built from a copy: the build writes next to it)."""
    root = tmp_path_factory.mktemp("plugin")
    shutil.copytree(PLUGIN_SRC, root / "src")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(root / "site"), str(root / "src")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return root / "site"


def _forget_plugins() -> None:
    for name in PLUGIN_METHODS:
        if name in METHODS:
            unregister_method(name)
    sys.modules.pop(PLUGIN_MODULE, None)
    METHODS.rescan()


@pytest.fixture
def plugin(plugin_site, monkeypatch):
    """The installed plugin on sys.path, nothing of it loaded yet; forgotten afterwards."""
    _forget_plugins()
    monkeypatch.syspath_prepend(str(plugin_site))
    yield plugin_site
    _forget_plugins()


def test_a_plugin_loads_on_first_lookup(plugin):
    assert PLUGIN_MODULE not in sys.modules  # installed, but nothing imported until a name is asked for
    spec = get_method("geo")
    assert spec.name == "geo" and spec.fuses_logits and spec.fusion == "geometric_mean"
    assert PLUGIN_MODULE in sys.modules
    names = list(METHODS)  # listing loads every plugin: built-ins first, then the plugin's, in any order
    assert tuple(names[: len(BUILT_IN)]) == BUILT_IN and set(names[len(BUILT_IN):]) == set(PLUGIN_METHODS)
    assert get_method("last_prompt").select(["a", "b", "c"]) == 2  # a factory's Method
    assert "geo" in logit_fusion_methods() and "last_prompt" not in logit_fusion_methods()


def test_without_the_plugin_the_name_is_unknown(plugin_site):
    _forget_plugins()
    with pytest.raises(SelfEnsembleError, match="Unknown method 'geo'"):
        check_method("geo")
    assert set(PLUGIN_METHODS).isdisjoint(discover_methods())


def _geometric_mean(logits: torch.Tensor, weights=None) -> torch.Tensor:
    """The rule written out here, independently of the plugin: mean of log-probs, renormalised."""
    logp = torch.log_softmax(logits.double(), dim=-1).mean(dim=0)
    return (logp - torch.logsumexp(logp, dim=0)).float()


def test_a_plugin_method_answers_as_the_reference_decoder(plugin, random_lm, fewshot_fmt):
    """geo through the engine = the no-cache reference decoder fusing the same rows by the geometric
    mean; last_prompt reports the last prompt asked alone."""
    lm = random_lm("llama")
    engine = Engine(lm, EngineConfig(attention="sdpa"))
    ans = engine.answer(PROMPTS, "geo", GEN, fewshot_fmt)
    parts = build_parts(lm.tokenizer, fewshot_fmt, PROMPTS)
    rows = plan_rows("avg", parts, None, EngineConfig(), cached_prefix=False).rows  # one row per prompt
    want = reference_generate(lm.model, rows, _geometric_mean, GEN.max_new_tokens, lm.eos_token_ids)
    assert ans.method == "geo" and ans.tokens == want and len(want) >= 3
    avg = engine.answer(PROMPTS, "avg", GEN, fewshot_fmt)
    assert (ans.tokens, round(ans.logprob, 4)) != (avg.tokens, round(avg.logprob, 4))  # geo is not avg
    last = engine.answer(PROMPTS, "last_prompt", GEN, fewshot_fmt)
    assert last.answer == last.per_prompt[-1] == engine.answer(PROMPTS[-1:], "origin", GEN, fewshot_fmt).answer


def _fake_dist(site: Path, entries: dict[str, str]) -> None:
    """A distribution as an installer leaves it (a .dist-info with entry_points.txt), written by hand."""
    info = site / "broken_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugins\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entries.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")


def test_broken_plugins_are_left_out_loudly(tmp_path, monkeypatch):
    (tmp_path / "toy_plugin_mod.py").write_text(
        "from selfensemble.methods.registry import Method\nOTHER = Method('other', rows='alone')\nNUMBER = 3\n")
    _fake_dist(tmp_path, {"missing": "no_such_module_xyz:METHOD", "misnamed": "toy_plugin_mod:OTHER",
                          "number": "toy_plugin_mod:NUMBER"})
    monkeypatch.syspath_prepend(str(tmp_path))
    METHODS.rescan()
    try:
        with pytest.raises(ConfigError, match="'missing' comes from a plugin.*no_such_module_xyz.*ModuleNotFoundError"):
            check_method("missing")
        with pytest.warns(RuntimeWarning) as caught:  # listing names each plugin it leaves out
            names = list(METHODS)
        assert names == list(BUILT_IN)
        said = sorted(str(w.message) for w in caught)
        assert len(said) == 3 and all(m.startswith("selfensemble: method plugin '") for m in said), said
        assert "'misnamed' left out" in said[0] and "gives the method 'other' under the name 'misnamed'" in said[0]
        assert caught[0].filename == __file__  # the warning points at the caller, not the registry
        with pytest.raises(ConfigError, match="'number' comes from a plugin.*gives a int, not a selfensemble Method"):
            get_method("number")
    finally:
        sys.modules.pop("toy_plugin_mod", None)
        METHODS.rescan()


@pytest.mark.slow  # a CLI subprocess (imports torch)
def test_ask_answers_with_a_plugin_method(plugin_site):
    """A fresh process finds the plugin through its entry point alone: ask answers with it."""
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": os.pathsep.join([str(src), str(plugin_site)])}
    r = subprocess.run([sys.executable, "-m", "selfensemble", "ask", *PROMPTS[:1], "-p", PROMPTS[1], "--model",
                        "random:llama", "--method", "geo", "--max-new-tokens", "3", "--attention", "sdpa", "--json"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["method"] == "geo" and isinstance(out["answer"], str) and out["prompts"] == PROMPTS[:2]
