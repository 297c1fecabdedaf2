"""Reports on hand-made runs whose numbers are worked out by hand in the comments."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from selfensemble.analysis.compare import compare
from selfensemble.analysis.render import to_markdown
from selfensemble.analysis.report import find_runs, summarize
from selfensemble.analysis.report import report as compute_report
from selfensemble.cli.report import show_report
from selfensemble.errors import SelfEnsembleError
from selfensemble.store.run_store import RunStore


def report(run_dirs, out_png=None, console=None, fmt: str = "table", width=None, **kwargs) -> dict:
    """report.report, then the CLI's rendering of its result (what `selfensemble report` shows;
    ``width`` as --width, 0 as --wide)."""
    result = compute_report(run_dirs, out_png, **kwargs)
    show_report(result, fmt, console, width=width)
    return result

IDS = ["q0", "q1", "q2", "q3", "q4"]
ORIGIN = [True, True, True, False, False]  # 3/5
AVG = [True, True, True, True, False]  # 4/5 -> paired diff vs origin = mean(0,0,0,1,0) = 0.2
# per prompt (3 prompts): column accuracies 3/5, 2/5, 2/5 -> mean 7/15, min 0.4, max 0.6
PER_PROMPT_CORRECT = [[True, True, False], [True, False, False], [True, True, True],
                      [False, False, True], [False, False, False]]
# agreeing pairs per question: 1/3, 3/3, 3/3, 0/3, 1/3 -> consistency (1/3+1+1+0+1/3)/5 = 8/15
PER_PROMPT_ANSWERS = [["Paris", "paris.", "London"], ["The Beatles", "beatles", "Beatles!"], ["42", "42", "42"],
                      ["red", "blue", "green"], ["New York", "new  york", "Boston"]]


def _records(correct, per_prompt=False, seconds=1.0):
    out = []
    for i, (rid, c) in enumerate(zip(IDS, correct, strict=False)):
        r = {"id": rid, "prompts": ["p0", "p1", "p2"], "gold": ["g"], "prediction": "x", "generation": "x",
             "correct": c, "seconds": seconds + i}
        if per_prompt:
            r["per_prompt"] = PER_PROMPT_ANSWERS[i]
            r["per_prompt_correct"] = PER_PROMPT_CORRECT[i]
        out.append(r)
    return out


def _manifest(method):
    return {"config": {"method": method, "model": "tiny", "dataset": "toy", "num_paraphrases": 3}}


def _write_runs(root):
    runs = {"origin": _records(ORIGIN), "avg": _records(AVG),
            "per_prompt": _records([c[0] for c in PER_PROMPT_CORRECT], per_prompt=True)}
    for method, recs in runs.items():
        with RunStore(root / method, _manifest(method)["config"]) as store:
            for r in recs:
                store.append(r)
    return runs


def test_summarize_exact_numbers():
    row = summarize(_records(ORIGIN), _manifest("origin"))
    assert row["method"] == "origin" and row["n"] == 5
    assert row["accuracy"] == pytest.approx(0.6)
    assert row["ci_low"] <= 0.6 <= row["ci_high"] and row["ci_low"] < row["ci_high"]
    assert row["ci_low"] >= 0.0 and row["ci_high"] <= 1.0
    assert row["seconds_per_item"] == pytest.approx(3.0)  # mean of 1..5
    assert row["avg_prompt_accuracy"] is None and row["mean_single"] is None
    assert row["consistency"] is None and row["ece"] is None
    json.dumps(row)  # JSON-able, no NaN


def test_summarize_per_prompt_stats_and_consistency():
    row = summarize(_records(ORIGIN, per_prompt=True), _manifest("per_prompt"))
    assert row["per_prompt_accuracy"] == pytest.approx([0.6, 0.4, 0.4])
    assert row["avg_prompt_accuracy"] == pytest.approx(7 / 15)
    # per item over its 3 prompts: 2/3, 1/3, 1, 1/3, 0 -> mean_single 7/15 (every item has every prompt: = AvgP)
    assert row["mean_single"] == pytest.approx(7 / 15)
    assert row["per_prompt_min"] == pytest.approx(0.4)
    assert row["per_prompt_max"] == pytest.approx(0.6)
    assert row["per_prompt_std"] == pytest.approx((((0.6 - 7 / 15) ** 2 + 2 * (0.4 - 7 / 15) ** 2) / 3) ** 0.5)
    assert row["consistency"] == pytest.approx(8 / 15)


def test_ece_in_summary_by_hand():
    recs = _records(ORIGIN)
    for r, c in zip(recs, [0.95, 0.95, 0.15, 0.15, 0.15], strict=True):
        r["confidence"] = c
    # items: (0.95,T) (0.95,T) (0.15,T) (0.15,F) (0.15,F): |1-0.95|*2/5 + |1/3-0.15|*3/5
    assert summarize(recs, _manifest("avg"))["ece"] == pytest.approx(0.05 * 0.4 + (1 / 3 - 0.15) * 0.6)


def test_compare_paired_diffs():
    runs = [("origin", _records(ORIGIN)), ("avg", _records(AVG)),
            ("per_prompt", _records([c[0] for c in PER_PROMPT_CORRECT], per_prompt=True))]
    rows = {(r["method"], r["baseline"]): r for r in compare(runs)}
    assert set(rows) == {("origin", "mean_single"), ("avg", "origin"), ("avg", "mean_single"),
                         ("per_prompt", "origin"), ("per_prompt", "mean_single")}
    avg = rows["avg", "origin"]
    assert avg["diff_mean"] == pytest.approx(0.2) and avg["n_paired"] == 5 and avg["test"] == "mcnemar"
    assert avg["diff_low"] <= 0.2 <= avg["diff_high"]
    # vs mean_single: AVG - (2/3, 1/3, 1, 1/3, 0) = (1/3, 2/3, 0, 2/3, 0) -> mean 1/3; the sign test: 3 above, 0 below
    single = rows["avg", "mean_single"]
    assert single["single_source"] == "per_prompt" and single["test"] == "sign"
    assert single["diff_mean"] == pytest.approx(1 / 3) and single["n_paired"] == 5
    assert single["diff_low"] <= 1 / 3 <= single["diff_high"]
    assert (single["n_better"], single["n_worse"]) == (3, 0) and single["p_value"] == pytest.approx(2 / 8)
    assert rows["per_prompt", "origin"]["diff_mean"] == pytest.approx(0.0)


def test_echo_rate_and_mcnemar_in_report_rows():
    recs = _records(ORIGIN)
    recs[0]["prediction"], recs[0]["prompts"] = "Paris was born in [MASK].", ["Paris was born in [MASK]."]
    recs[1]["echo"] = True  # a stored flag wins over recomputing
    assert summarize(recs, _manifest("origin"))["echo_rate"] == pytest.approx(2 / 5)
    # avg vs origin: discordant only q3 (avg right) → 1 vs 0 → p = 2 * 1/2 = 1.0
    flex = _records([False, False, False, False, True])  # vs avg: avg-only 4, flex-only 1 → p = 2*6/32
    rows = compare([("origin", _records(ORIGIN)), ("avg", _records(AVG)), ("flex", flex)])
    by = {(r["method"], r["baseline"]): r for r in rows}
    assert by["avg", "origin"]["p_value"] == pytest.approx(1.0)
    assert by["flex", "avg"]["p_value"] == pytest.approx(2 * 6 / 32)
    assert by["flex", "avg"]["diff_mean"] == pytest.approx(-0.6) and by["flex", "avg"]["n_paired"] == 5
    assert ("avg", "avg") not in by


def test_compare_pairs_only_shared_ids_and_handles_missing_baseline():
    short = _records(AVG)[:4]  # avg stopped early: q0..q3 -> diff mean(0,0,0,1) = 0.25
    rows = compare([("origin", _records(ORIGIN)), ("avg", short)])
    assert len(rows) == 1 and rows[0]["n_paired"] == 4 and rows[0]["diff_mean"] == pytest.approx(0.25)
    assert compare([("avg", _records(AVG))], baseline="origin") == []  # nothing to compare with


def test_report_on_dir_with_method_subfolders(tmp_path):
    _write_runs(tmp_path / "runs")
    buf = io.StringIO()
    out_png = tmp_path / "out" / "accuracy.png"
    result = report([tmp_path / "runs"], out_png, console=Console(file=buf, width=220))
    assert out_png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved == json.loads(json.dumps(result))
    names = [r["name"] for r in result["runs"]]
    assert sorted(names) == ["avg", "origin", "per_prompt"]
    by = {r["name"]: r for r in result["runs"]}
    assert by["origin"]["accuracy"] == pytest.approx(0.6) and by["avg"]["accuracy"] == pytest.approx(0.8)
    assert by["per_prompt"]["avg_prompt_accuracy"] == pytest.approx(7 / 15)
    diffs = {(r["method"], r["baseline"]): r for r in result["comparisons"]}
    assert diffs["avg", "origin"]["diff_mean"] == pytest.approx(0.2)
    text = buf.getvalue()
    assert "Accuracy — tiny, toy" in text and "Paired differences — tiny, toy" in text
    assert "0.600 [" in text and "+.200 [" in text


def test_report_accepts_run_dirs_directly_and_groups_models(tmp_path):
    _write_runs(tmp_path / "a")
    with RunStore(tmp_path / "b" / "origin", {"method": "origin", "model": "other", "dataset": "toy"}) as s:
        for r in _records(AVG):
            s.append(r)
    result = report([tmp_path / "a" / "origin", tmp_path / "a" / "avg", tmp_path / "b"], None,
                    console=Console(file=io.StringIO()))
    assert len(result["runs"]) == 3 and "png" not in result
    # the other model's origin run is not paired with tiny's avg run
    assert [(d["method"], d["model"]) for d in result["comparisons"]] == [("avg", "tiny")]
    assert result["comparisons"][0]["diff_mean"] == pytest.approx(0.2)
    assert not (tmp_path / "report.json").exists()
    assert [(c["model"], c["dataset"]) for c in result["provenance"]] == [("tiny", "toy"), ("other", "toy")]


def test_report_reads_flat_and_nested_manifests_alike(tmp_path):
    """A run folder from before nested manifests (model at the top) and a new one (model under
    "load") of the same model and dataset are one group, so they are paired."""
    from selfensemble.config.load import LoadSpec
    from selfensemble.config.run import RunConfig

    _write(tmp_path, "origin", _records(ORIGIN), {"model": "m", "dataset": "toy", "batch_size": 8, "gate": None})
    nested = RunConfig(dataset="toy", num_paraphrases=3, load=LoadSpec("m")).method_config("avg")
    assert "model" not in nested and nested["load"]["model"] == "m"
    with RunStore(tmp_path / "avg", nested) as store:
        for r in _records(AVG):
            store.append(r)
    result = compute_report([tmp_path], None)
    assert [(r["method"], r["model"], r["dataset"]) for r in result["runs"]] == [("origin", "m", "toy"),
                                                                                 ("avg", "m", "toy")]
    assert [(d["method"], d["model"]) for d in result["comparisons"]] == [("avg", "m")]
    assert result["comparisons"][0]["diff_mean"] == pytest.approx(0.2)


def test_find_runs_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SelfEnsembleError, match="no results.jsonl"):
        find_runs([tmp_path / "empty"])
    with pytest.raises(SelfEnsembleError, match="no such directory"):
        find_runs([tmp_path / "missing"])


def test_to_markdown():
    rows = [summarize(_records(ORIGIN), _manifest("origin")),
            summarize(_records(AVG, per_prompt=True), _manifest("per_prompt"))]
    md = to_markdown({"runs": rows, "notes": ["a note"]}, width=None)
    lines = md.strip().splitlines()
    assert lines[0] == "### Accuracy — tiny, toy" and lines[1] == ""
    assert lines[2].startswith("| method | n | accuracy [95% CI] | EM/cont/F1/part | AvgP (min–max) |")
    assert "| origin | 5 | 0.600 [" in lines[4]
    assert "0.467 (0.400–0.600)" in lines[5]
    assert lines[7] == "> a note" and lines[9] == "**Legend**"
    assert any(ln.startswith("- AvgP (min–max): ") for ln in lines)


LONG = "flex [pararel-relations-with-a-very-long-folder-name]"


def _long_named_runs(root):
    _write_runs(root)
    (root / "origin").rename(root / "a")
    (root / "avg").rename(root / "b")
    # two runs of one method get their folder in the name: a long name that must stay whole
    for folder in ("pararel-relations-with-a-very-long-folder-name", "x"):
        with RunStore(root / folder, _manifest("flex")["config"]) as store:
            for r in _records(AVG):
                store.append(r)


def test_report_formats_keep_names_whole(tmp_path, capsys):
    _long_named_runs(tmp_path / "runs")
    for fmt in ("markdown", "csv", "json"):
        result = report([tmp_path / "runs"], None, fmt=fmt)
        out = capsys.readouterr().out
        assert LONG in out, fmt
        if fmt == "markdown":
            table = [ln for ln in out.splitlines() if ln.startswith("| ")]
            assert len({ln.count(" | ") for ln in table[:6]}) == 1  # header, rule, 4 runs: none wrapped
            assert f"| {LONG} | 5 | 0.800 [" in out
        elif fmt == "csv":
            import csv

            rows = list(csv.DictReader(io.StringIO(out)))
            by = {r["name"]: r for r in rows}
            assert float(by[LONG]["accuracy"]) == pytest.approx(0.8) and by[LONG]["n"] == "5"
            assert float(by[LONG]["cmp_diff_mean"]) == pytest.approx(0.2)  # vs origin, paired
            assert by["origin"]["cmp_diff_mean"] == ""  # the baseline has no comparison row
        else:
            assert json.loads(out) == json.loads(json.dumps(result))
    with pytest.raises(SelfEnsembleError, match="Unknown report format"):
        report([tmp_path / "runs"], None, fmt="html")


def test_rich_table_in_a_narrow_terminal_does_not_wrap_or_cut_names(tmp_path):
    _long_named_runs(tmp_path / "runs")
    buf = io.StringIO()
    report([tmp_path / "runs"], None, console=Console(file=buf, width=60))
    text = buf.getvalue()
    assert LONG in text and "accuracy [95% CI]" in text and "…" not in text
    assert "┃ n ┃" in text and "│ 5 │" in text  # no column squeezed away (rich dropped 'n' before)


def test_reliability_bins_and_ece_by_hand():
    from selfensemble.analysis.report import calibration, reliability_bins

    recs = _records(ORIGIN)
    for r, c in zip(recs, [0.95, 0.95, 0.15, 0.15, 0.15], strict=True):
        r["confidence"] = c
    bins = reliability_bins(recs)
    # (0.95,T) (0.95,T) → bin (.9, 1]: acc 1; (0.15,T) (0.15,F) (0.15,F) → bin (.1, .2]: acc 1/3
    assert [(b["lo"], b["n"]) for b in bins] == [(pytest.approx(0.1), 3), (pytest.approx(0.9), 2)]
    assert bins[0]["accuracy"] == pytest.approx(1 / 3) and bins[1]["confidence"] == pytest.approx(0.95)
    [row] = calibration([("avg", recs)])
    hand = 0.05 * 0.4 + (1 / 3 - 0.15) * 0.6
    assert row["ece"] == pytest.approx(hand)
    assert row["ece"] == pytest.approx(summarize(recs, _manifest("avg"))["ece"])  # same as metrics.ece


def test_report_writes_reliability_diagram_next_to_report_png(tmp_path):
    runs = _write_runs(tmp_path / "runs")
    assert runs  # records without confidence: no diagram
    buf = io.StringIO()
    result = report([tmp_path / "runs"], tmp_path / "out" / "report.png", console=Console(file=buf, width=220))
    assert result["calibration"] == [] and not (tmp_path / "out" / "reliability.png").exists()
    recs = _records(AVG)
    for r, c in zip(recs, [0.9, 0.8, 0.7, 0.6, 0.2], strict=True):
        r["confidence"] = c
    with RunStore(tmp_path / "runs2" / "avg", _manifest("avg")["config"]) as store:
        for r in recs:
            store.append(r)
    buf = io.StringIO()
    result = report([tmp_path / "runs2"], tmp_path / "out2" / "report.png", console=Console(file=buf, width=220))
    png = tmp_path / "out2" / "reliability.png"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and result["reliability_png"] == str(png)
    text = buf.getvalue()
    assert "Calibration" in text and "ECE" in text
    # 4 right at .9 .8 .7 .6, 1 wrong at .2: |1-.9|+|1-.8|+|1-.7|+|1-.6|+|0-.2| over 5
    assert result["calibration"][0]["ece"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.4 + 0.2) / 5)


# -- scorers, Holm, groups, prompt sensitivity, old runs ----------------------------------------


def _scored(rid, prediction, gold, **extra):
    from selfensemble.scoring import score_all

    scores = score_all(prediction, gold)
    return {"id": rid, "prompts": ["p0", "p1"], "gold": gold, "prediction": prediction,
            "correct": scores["contains"], "scores": scores, **extra}


def test_summary_has_all_four_scorers_and_headline_choice():
    recs = [_scored("a", "Mozart", ["Wolfgang Amadeus Mozart"]),  # partial only, F1 .5
            _scored("b", "It is Paris, France", ["Paris"]),  # contains + partial, F1 .4
            _scored("c", "Rome", ["Rome"])]  # all, F1 1
    manifest = {"config": {"method": "avg", "model": "m", "dataset": "d", "match": "contains"}}
    row = summarize(recs, manifest)
    assert row["scorer"] == "contains" and row["accuracy"] == pytest.approx(2 / 3)
    assert row["exact_match"] == pytest.approx(1 / 3) and row["contains"] == pytest.approx(2 / 3)
    assert row["token_f1"] == pytest.approx((0.5 + 0.4 + 1.0) / 3) and row["partial"] == pytest.approx(1.0)
    assert row["scores_recomputed"] == 0
    by_partial = summarize(recs, manifest, scorer="partial")
    assert by_partial["scorer"] == "partial" and by_partial["accuracy"] == pytest.approx(1.0)
    assert summarize(recs, manifest, scorer="f1")["accuracy"] == pytest.approx(1.9 / 3)
    with pytest.raises(SelfEnsembleError, match="Unknown scorer"):
        summarize(recs, manifest, scorer="bleu")


def test_summary_echo_against_own_prompts_and_demo_copies():
    prompts = ["Where was Allan Peiper born?", "In which town was the cyclist Allan Peiper born?"]
    recs = [{**_scored("a", "the cyclist", ["Alexandra"]), "prompts": prompts, "demo_answers": ["Melbourne"]},
            {**_scored("b", "Melbourne", ["Alexandra"]), "prompts": prompts, "demo_answers": ["melbourne", "Rome"]},
            {**_scored("c", "Allan Peiper", ["Alexandra"]), "prompts": prompts, "demo_answers": []}]
    for r in recs:
        r.pop("echo", None)  # judged by the report from the prompts each method saw
    origin = summarize(recs, _manifest("origin"))
    avg = summarize(recs, _manifest("avg"))
    assert origin["echo_rate"] == pytest.approx(1 / 3)  # only "Allan Peiper": origin never saw "the cyclist"
    assert avg["echo_rate"] == pytest.approx(2 / 3)
    assert origin["demo_copy_rate"] == pytest.approx(1 / 3)  # "Melbourne" is its own demonstration's answer
    assert summarize(_records(ORIGIN), _manifest("origin"))["demo_copy_rate"] is None


def _write(root, method, records, config=None):
    with RunStore(root / method, {**_manifest(method)["config"], **(config or {})}) as store:
        for r in records:
            store.append(r)


def test_holm_adjusted_p_decides_significance(tmp_path):
    # 20 items. origin right on none; avg on q0..q9; flex on q0..q5.
    # McNemar: avg vs origin 10:0 -> 2/2^10; flex vs origin 6:0 -> 2/2^6 = .03125; flex vs avg 0:4 -> 2/2^4
    # Holm (m = 3): .001953*3 = .00586, .03125*2 = .0625, max(.0625, .125*1) = .125
    ids = [f"q{i}" for i in range(20)]
    runs = {"origin": [], "avg": list(range(10)), "flex": list(range(6))}
    for method, right in runs.items():
        _write(tmp_path / "runs", method, [{"id": q, "correct": i in right} for i, q in enumerate(ids)])
    buf = io.StringIO()
    result = report([tmp_path / "runs"], None, console=Console(file=buf, width=250))
    by = {(r["method"], r["baseline"]): r for r in result["comparisons"]}
    assert by["avg", "origin"]["p_value"] == pytest.approx(2 / 1024)
    assert by["avg", "origin"]["p_holm"] == pytest.approx(3 * 2 / 1024)
    assert by["flex", "origin"]["p_value"] == pytest.approx(0.03125)
    assert by["flex", "origin"]["p_holm"] == pytest.approx(0.0625)
    assert by["flex", "avg"]["p_holm"] == pytest.approx(0.125)
    assert {r["family"] for r in result["comparisons"]} == {"exploratory"} and result["families"]["confirmatory"] is None
    text = buf.getvalue()
    assert ".006 *" in text  # avg vs origin survives the adjustment
    assert ".031" in text and ".062 *" not in text and ".063 *" not in text  # flex vs origin does not
    assert all(r["cluster_low"] is None for r in result["comparisons"])  # no groups: no group interval


def test_cluster_interval_when_items_have_groups(tmp_path):
    # 4 relations x 5 facts; avg right on every fact of relations A and B, origin on none
    recs = {"origin": [], "avg": []}
    for g in "ABCD":
        for k in range(5):
            recs["origin"].append({"id": f"{g}:{k}", "correct": False, "group": g})
            recs["avg"].append({"id": f"{g}:{k}", "correct": g in "AB", "group": g})
    for method, rs in recs.items():
        _write(tmp_path / "runs", method, rs)
    result = report([tmp_path / "runs"], None, fmt="json")
    [row] = result["comparisons"]
    assert row["diff_mean"] == pytest.approx(0.5) and row["n_groups"] == 4
    # groups resampled whole: a draw of 4 relations takes 0..4 of the two good ones -> means 0, .25, ..., 1
    assert row["cluster_low"] <= 0.25 and row["cluster_high"] >= 0.75
    assert row["cluster_high"] - row["cluster_low"] > row["diff_high"] - row["diff_low"]  # wider than items


def test_prompt_sensitivity_block_in_metrics_and_report(tmp_path, capsys):
    _write_runs(tmp_path / "runs")
    row = summarize(_records(ORIGIN, per_prompt=True), _manifest("per_prompt"))
    ps = row["prompt_sensitivity"]
    # positions 3/5, 2/5, 2/5: MaxP .6, AvgP 7/15, CPS .6 * (1 - (.6 - 7/15))
    assert ps["max_prompt_accuracy"] == pytest.approx(0.6) and ps["avg_prompt_accuracy"] == pytest.approx(7 / 15)
    assert ps["cps"] == pytest.approx(0.6 * (1 - (0.6 - 7 / 15)))
    # answers disagree on q0 (Paris/paris/London), q3, q4; agree on q1 (Beatles x3) and q2 -> 3/5
    assert ps["prompt_disagreement"] == pytest.approx(0.6) and ps["consistency"] == pytest.approx(8 / 15)
    result = report([tmp_path / "runs"], None, fmt="markdown", width=0)
    out = capsys.readouterr().out
    [block] = result["prompt_sensitivity"]
    assert block["source"] == "per_prompt" and block["model"] == "tiny" and block["n_items"] == 5
    assert "### Prompt sensitivity" in out and "0.600 0.400 0.400" in out
    report([tmp_path / "runs"], None, fmt="csv")
    import csv

    by = {r["name"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert float(by["per_prompt"]["prompt_sensitivity_cps"]) == pytest.approx(0.6 * (1 - (0.6 - 7 / 15)))
    assert by["origin"]["prompt_sensitivity"] == ""  # no per-prompt answers: an empty cell, not a dict


def test_old_run_folder_without_scores_opens_with_a_note(tmp_path, capsys):
    # written before records carried scores: a partial-match run, as the default used to be
    old = [{"id": "q0", "prompts": ["Who wrote it?"], "gold": ["Wolfgang Amadeus Mozart"], "prediction": "Mozart",
            "correct": True},
           {"id": "q1", "prompts": ["Capital?"], "gold": ["Paris"], "prediction": "It is Paris", "correct": True}]
    _write(tmp_path / "runs", "origin", old, {"match": "partial"})
    result = report([tmp_path / "runs"], None, fmt="json")
    [row] = result["runs"]
    assert row["scores_recomputed"] == 2 and row["scorer"] == "partial" and row["accuracy"] == 1.0
    assert row["contains"] == 0.5 and row["exact_match"] == 0.0 and row["partial"] == 1.0
    assert any("records without per-record scores" in n and "origin 2/2" in n for n in result["notes"])
    assert "computed here from prediction and gold" in capsys.readouterr().out  # the json says so too
    strict = report([tmp_path / "runs"], None, fmt="markdown", scorer="contains")
    assert strict["runs"][0]["accuracy"] == 0.5
    assert "> records without per-record scores (written by an older version): origin 2/2;" in capsys.readouterr().out


def test_the_library_report_prints_nothing(tmp_path, capsys):
    """report.report returns the comparison; rendering it (tables, markdown, ...) is the CLI's job."""
    _long_named_runs(tmp_path / "runs")
    result = compute_report([tmp_path / "runs"], tmp_path / "out" / "report.png")
    assert capsys.readouterr() == ("", "")
    assert result["runs"] and (tmp_path / "out" / "report.json").exists()
    show_report(result, "markdown")
    assert LONG in capsys.readouterr().out
