"""The lm-evaluation-harness adapter: local task YAMLs over jsonl files written here, all offline.

References: `selfensemble run` on the same questions and paraphrases (generation), the harness's
own `hf` model (HFLM) on a copy of the same weights under transformers' own SDPA attention
(origin), and a from-scratch per-prompt forward (tests/test_loglik.py's reference) for fusion.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install '.[lm-eval]')")

from selfensemble.config.engine import EngineConfig  # noqa: E402
from selfensemble.engine.engine import Engine  # noqa: E402
from selfensemble.engine.prompts import PromptFormat  # noqa: E402
from selfensemble.integrations.harness_prompt import split_context  # noqa: E402
from selfensemble.integrations.lm_eval import SelfEnsembleLM, evaluate  # noqa: E402

FEWSHOT_QA = "Answer briefly.\n\nQuestion: Who wrote Hamlet?\nAnswer: Shakespeare\n\nQuestion: Where is Rome?\nAnswer: Italy\n\n"
MC_DOCS = [
    ("What is the capital of France?", ["Paris", "Rome", "Berlin"], 0,
     ["Which city is the capital of France?", "Name the French capital."]),
    ("Who wrote Hamlet?", ["Shakespeare", "Dickens", "Tolstoy"], 0,
     ["Hamlet was written by whom?", "Who is the author of Hamlet?"]),
    ("What do bees make?", ["honey", "milk", "silk"], 0, ["Bees produce what?", "What substance do bees make?"]),
    ("Which planet is closest to the sun?", ["Mercury", "Venus", "Mars"], 0,
     ["What planet orbits nearest the sun?", "Name the planet closest to the sun."]),
]


# -- finding the question ---------------------------------------------------------------------------
@pytest.mark.parametrize("context, question, prefix, cue", [
    (FEWSHOT_QA + "Question: What is the capital of France?\nAnswer:", "What is the capital of France?",
     FEWSHOT_QA, "Answer:"),
    ("Q: who is x?\nA: Bob\n\nQ: where is y?\nA:", "where is y?", "Q: who is x?\nA: Bob\n\n", "A:"),
    ("Question: Which is a fruit?\nA. apple\nB. brick\nAnswer:", "Which is a fruit?", "", "A. apple\nB. brick\nAnswer:"),
    ("Answer in one word.\nWho painted the Mona Lisa?\nAnswer: ", "Who painted the Mona Lisa?", "Answer in one word.\n",
     "Answer: "),
    ("About X.\n\nFind 2+2.\nA. 3\nB. 4\nAnswer: B\n\nFind the degree of\nthe extension.\nA. 0\nB. 4\nC. 2\nAnswer:",
     "Find the degree of\nthe extension.", "About X.\n\nFind 2+2.\nA. 3\nB. 4\nAnswer: B\n\n", "A. 0\nB. 4\nC. 2\nAnswer:"),
])
def test_split_context_finds_the_final_question(context, question, prefix, cue):
    split = split_context(context)
    assert split is not None
    assert (split.question, split.prefix, split.cue) == (question, prefix, cue)
    assert split.prefix + split.segment() + split.cue == context
    assert split.segment("Rephrased?") == split.label + "Rephrased?" + split.line_end


@pytest.mark.parametrize("context", [
    "The cat sat on the",                                   # no answer cue: a completion task
    "Passage: the sky is blue.\nAnswer:",                   # no labelled or '?' question line
    "Question: what is it?",                                # no cue after the question
    "Question: \nAnswer:",                                  # an empty question
])
def test_split_context_isolates_nothing_when_no_question(context):
    assert split_context(context) is None


# -- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def lm(random_lm):
    return random_lm("llama")


@pytest.fixture(scope="module")
def engine(lm):
    return Engine(lm, EngineConfig(attention="sdpa", batch_size=4))


@pytest.fixture(scope="module")
def hf_reference(lm):
    """The harness's own hf model on a copy of the weights under transformers' SDPA (not our dispatcher)."""
    from lm_eval.models.huggingface import HFLM

    model = copy.deepcopy(lm.model)
    model.set_attn_implementation("sdpa")
    return HFLM(pretrained=model, tokenizer=lm.tokenizer, batch_size=2)


def write_task(folder: Path, name: str, docs: list[dict], **config) -> Path:
    """A harness task YAML over a jsonl file: `dataset_path: json`, no download."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    task = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "doc_to_text": "{{prompt}}", **config}
    (folder / f"{name}.yaml").write_text(json.dumps(task))  # JSON is YAML
    return folder


GEN_CONFIG = dict(output_type="generate_until", doc_to_target="{{answers[0]}}",
                  generation_kwargs={"until": ["\n"], "max_gen_toks": 6, "do_sample": False},
                  metric_list=[{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                                "ignore_case": True, "ignore_punctuation": True}])
MC_CONFIG = dict(output_type="multiple_choice", doc_to_choice="{{choices}}", doc_to_target="label",
                 metric_list=[{"metric": "acc", "aggregation": "mean", "higher_is_better": True}])


def mc_docs(paraphrases: bool = True) -> list[dict]:
    return [{"prompt": FEWSHOT_QA + f"Question: {q}\nAnswer:", "choices": c, "label": y,
             **({"paraphrases": p} if paraphrases else {})} for q, c, y, p in MC_DOCS]


def run_task(model, folder: Path, task: str) -> dict:
    return evaluate(model, [task], str(folder), log_samples=True) if isinstance(model, SelfEnsembleLM) else \
        lm_eval.simple_evaluate(model=model, tasks=[task], log_samples=True,
                                task_manager=lm_eval.tasks.TaskManager(include_path=str(folder), include_defaults=False))


def responses(results: dict, task: str) -> list:
    """Per document, per request: the model's raw answer (text, or (loglikelihood, is_greedy))."""
    return [[r[0] for r in s["resps"]] for s in sorted(results["samples"][task], key=lambda s: s["doc_id"])]


def loglikelihoods(results: dict, task: str) -> list[tuple[float, bool]]:
    return [tuple(r) for doc in responses(results, task) for r in doc]


# -- generation: the same predictions as `selfensemble run` ----------------------------------------------
@pytest.mark.parametrize("method", ["origin", "avg", "flex"])
def test_generate_until_matches_selfensemble_run(tmp_path, engine, method):
    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.load import LoadSpec
    from selfensemble.config.run import RunConfig
    from selfensemble.pipeline.experiment import SAMPLE_DATA, load_items, run_experiment

    cfg = RunConfig(dataset="jsonl", data_path=str(SAMPLE_DATA), limit=10, few_shot=2, num_paraphrases=3,
                    methods=[method], load=LoadSpec("random:llama"), engine=EngineConfig(attention="sdpa"),
                    max_new_tokens=6,
                    dataset_options={"paraphrase_columns": ["paraphrases"], "id_column": "id"}, out=str(tmp_path / "run"))
    ds, items = load_items(cfg)
    docs = []
    for it in items:  # the harness prompt is the very text `run` builds; paraphrases ride in the doc
        fmt = PromptFormat(instruction=ds.instruction, examples=tuple(ds.few_shot(it, cfg.few_shot, cfg.seed)))
        docs.append({"id": it.id, "prompt": fmt.prefix_text() + f"Q: {it.question}\nA:", "answers": list(it.answers),
                     "paraphrases": list(it.prompts[1:3])})
    folder = write_task(tmp_path / "tasks", "se_gen", docs, **GEN_CONFIG)
    run_experiment(cfg, engine=engine)
    run = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "run" / method / "results.jsonl").read_text().splitlines()}

    adapter = SelfEnsembleLM(method=method, num_paraphrases=3, tokenize="pieces", engine=engine)
    results = run_task(adapter, folder, "se_gen")
    got = {s["doc"]["id"]: s["resps"][0][0] for s in results["samples"]["se_gen"]}  # one request per doc
    assert len(got) == 10
    # `run` stops at a newline once some text is out, the task at the first "\n" (its `until`)
    assert got == {i: r["generation"].split("\n")[0] for i, r in run.items()}
    assert any(v.strip() for v in got.values())
    counts = adapter.report()["counts"]
    asked = 0 if method == "origin" else 10  # origin asks the original question only
    assert (counts["with_paraphrases"], counts["paraphrases_from_doc"], counts["no_question"]) == (asked, 2 * asked, 0)
    assert "exact_match,none" in results["results"]["se_gen"]


# -- origin through the adapter = the harness's own hf model ------------------------------------------
def test_origin_equals_harness_hf_model_for_generation(tmp_path, engine, hf_reference):
    docs = [{"prompt": FEWSHOT_QA + f"Question: {q}\nAnswer:", "answers": [c[0]]} for q, c, _, _ in MC_DOCS]
    folder = write_task(tmp_path / "tasks", "se_gen_hf", docs, **GEN_CONFIG)
    ours = run_task(SelfEnsembleLM(method="origin", engine=engine), folder, "se_gen_hf")
    ref = run_task(hf_reference, folder, "se_gen_hf")
    assert responses(ours, "se_gen_hf") == responses(ref, "se_gen_hf")
    assert any(doc[0].strip() for doc in responses(ref, "se_gen_hf"))


def test_origin_equals_harness_hf_model_for_loglikelihood(tmp_path, engine, hf_reference):
    folder = write_task(tmp_path / "tasks", "se_mc_hf", mc_docs(), **MC_CONFIG)
    ours = run_task(SelfEnsembleLM(method="origin", engine=engine), folder, "se_mc_hf")
    ref = run_task(hf_reference, folder, "se_mc_hf")
    a, b = loglikelihoods(ours, "se_mc_hf"), loglikelihoods(ref, "se_mc_hf")
    assert len(a) == len(b) == 12  # 4 documents x 3 choices
    for (ll_a, greedy_a), (ll_b, greedy_b) in zip(a, b, strict=True):
        assert ll_a == pytest.approx(ll_b, abs=2e-4) and greedy_a == greedy_b
    assert ours["results"]["se_mc_hf"]["acc,none"] == ref["results"]["se_mc_hf"]["acc,none"]


# -- multiple choice under fusion ---------------------------------------------------------------------
def test_avg_loglikelihood_fuses_the_paraphrased_contexts(tmp_path, engine, lm):
    from test_loglik import reference_score

    folder = write_task(tmp_path / "tasks", "se_mc", mc_docs(), **MC_CONFIG)
    adapter = SelfEnsembleLM(method="avg", num_paraphrases=3, engine=engine)
    samples = run_task(adapter, folder, "se_mc")["samples"]["se_mc"]
    for s in samples:
        context, continuation = s["arguments"][0]
        prepared = adapter._prepare([request(context, continuation, s["doc"])])[0]
        assert len(prepared.parts.segments) == 3
        cont = lm.tokenizer(context + continuation, add_special_tokens=False).input_ids[len(prepared.context_tokens):]
        assert s["resps"][0][0][0] == pytest.approx(reference_score(lm.model, prepared.parts, cont, "avg"), abs=2e-4)


def test_avg_over_identical_paraphrases_equals_plain_model(tmp_path, engine):
    docs = [dict(d, paraphrases=[d["prompt"].rsplit("Question: ", 1)[1].split("\n")[0]] * 4) for d in mc_docs(False)]
    folder = write_task(tmp_path / "tasks", "se_mc_same", docs, **MC_CONFIG)
    plain = run_task(SelfEnsembleLM(method="origin", engine=engine), folder, "se_mc_same")
    fused = SelfEnsembleLM(method="avg", num_paraphrases=5, engine=engine)
    same = run_task(fused, folder, "se_mc_same")
    a, b = loglikelihoods(plain, "se_mc_same"), loglikelihoods(same, "se_mc_same")
    assert len(a) == 12
    for (ll_a, greedy_a), (ll_b, greedy_b) in zip(a, b, strict=True):
        assert ll_a == pytest.approx(ll_b, abs=1e-5) and greedy_a == greedy_b
    assert fused.report()["counts"]["duplicates_dropped"] == 16  # said, not silent


def request(context: str, continuation: str, doc: dict | None = None):
    from lm_eval.api.instance import Instance

    return Instance("loglikelihood", doc or {}, (context, continuation), 0)


def test_fusion_changes_the_choice(tmp_path, engine):
    """Crafted documents: gold = the choice avg prefers where the original wording alone prefers another."""
    plain, fused = (SelfEnsembleLM(method=m, num_paraphrases=3, engine=engine) for m in ("origin", "avg"))
    docs = []
    for q, choices, _, paras in MC_DOCS:
        ctx, doc = FEWSHOT_QA + f"Question: {q}\nAnswer:", {"paraphrases": paras}
        best = [max(range(len(choices)), key=[ll for ll, _ in m.loglikelihood(
            [request(ctx, " " + c, doc) for c in choices])].__getitem__) for m in (plain, fused)]
        if best[0] != best[1]:
            docs.append({"prompt": ctx, "choices": choices, "label": best[1], "paraphrases": paras})
    if not docs:
        pytest.fail("no document where fusion changes the choice: the random model changed; extend MC_DOCS")
    folder = write_task(tmp_path / "tasks", "se_mc_flip", docs, **MC_CONFIG)
    acc = {m: run_task(SelfEnsembleLM(method=m, num_paraphrases=3, engine=engine), folder, "se_mc_flip")
           ["results"]["se_mc_flip"]["acc,none"] for m in ("origin", "avg")}
    assert acc == {"origin": 0.0, "avg": 1.0}


# -- contexts without a question, and the CLI -----------------------------------------------------------
def test_context_without_question_is_answered_plainly_and_counted(tmp_path, engine):
    docs = [{"prompt": "The capital of France is", "answers": ["Paris"]},
            {"prompt": FEWSHOT_QA + "Question: Who wrote Faust?\nAnswer:", "answers": ["Goethe"],
             "paraphrases": ["Faust was written by whom?"]}]
    folder = write_task(tmp_path / "tasks", "se_gen_mixed", docs, **GEN_CONFIG)
    flex = SelfEnsembleLM(method="flex", num_paraphrases=2, engine=engine)
    got = responses(run_task(flex, folder, "se_gen_mixed"), "se_gen_mixed")
    plain = responses(run_task(SelfEnsembleLM(method="origin", engine=engine), folder, "se_gen_mixed"), "se_gen_mixed")
    assert got[0] == plain[0]  # no question: the whole context, no paraphrases
    counts = flex.report()["counts"]
    assert (counts["contexts"], counts["no_question"], counts["with_paraphrases"]) == (2, 1, 1)


def test_unknown_model_arg_is_a_clear_error(engine):
    from selfensemble.errors import SelfEnsembleError

    with pytest.raises(SelfEnsembleError, match="Unknown selfensemble model_args"):
        SelfEnsembleLM(method="flex", engine=engine, fusion_tempreature=2)


@pytest.mark.slow  # a real CLI subprocess through the harness
def test_cli_writes_results_json_and_prints_the_table(tmp_path):
    folder = write_task(tmp_path / "tasks", "se_cli", mc_docs(), **MC_CONFIG)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "SELFENSEMBLE_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "selfensemble", "lm-eval", "--tasks", "se_cli", "--include-path", str(folder),
            "--model", "random:llama", "--method", "avg", "--num-paraphrases", "3", "--limit", "2",
            "--out", str(tmp_path / "out")]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert "acc,none" in saved["results"]["se_cli"]
    assert saved["selfensemble"]["method"] == "avg" and saved["selfensemble"]["counts"]["with_paraphrases"] == 2
    from selfensemble.config import defaults

    engine = saved["selfensemble"]["engine"]  # the measured flex default, not a copy of its own
    assert {k: engine[k] for k in defaults.FLEX_KNOBS} == defaults.flex()
    assert "se_cli" in r.stdout and "acc" in r.stdout
    bad = subprocess.run([*args[:5], "no_such_task", *args[6:]], capture_output=True, text=True, timeout=600, env=env)
    assert bad.returncode == 2 and "Unknown harness task 'no_such_task'" in bad.stderr and "Traceback" not in bad.stderr


def test_written_paraphrases_pass_the_gate_run_applies(engine, monkeypatch):
    """The adapter writes paraphrases through the run's gated generator: a drifting candidate (stubbed
    generator, wordllama similarity .41 / .49) is never fused, and a question left short is counted."""
    from selfensemble.pipeline.paraphrase import writer as paraphrase
    from selfensemble.pipeline.paraphrase.gate import check

    true = ["Who was the discoverer of penicillin?", "Which scientist discovered penicillin?"]
    drifts = ["Who discovered something that will change everything?", "Who discovered that substance?"]
    monkeypatch.setattr(paraphrase, "sample_step", lambda e, steps, cfg:
                        [[drifts[0], true[0], drifts[1], true[1]] for _ in steps])
    adapter = SelfEnsembleLM(method="avg", num_paraphrases=4, engine=engine)
    written = adapter._generated(["who discovered penicillin?"])["who discovered penicillin?"]
    assert sorted(written) == sorted(true) and all(v.kept for v in check("who discovered penicillin?", written))
    assert adapter.counts["short_after_gate"] == 1


# -- variants (--variants): the harness's own demonstrations re-rendered ----------------------------------
def test_harness_format_reads_the_context_back():
    from selfensemble.integrations.harness_variants import harness_format

    split = split_context(FEWSHOT_QA + "Question: Where is Paris?\nAnswer:")
    fmt = harness_format(split)
    assert [(e.prompts[0], e.answer) for e in fmt.examples] == [("Who wrote Hamlet?", "Shakespeare"),
                                                                 ("Where is Rome?", "Italy")]
    assert fmt.prefix_text() + fmt.question_template.format(question=split.question) + fmt.cue == \
        FEWSHOT_QA + "Question: Where is Paris?\nAnswer:"
    assert harness_format(split_context("Some passage.\nQuestion: Where is Paris?\nAnswer:")) is None


def test_variants_demos_and_weighted_methods_are_refused(engine):
    from selfensemble.errors import ConfigError, SelfEnsembleError

    with pytest.raises(ConfigError, match="harness draws the demonstrations"):
        SelfEnsembleLM(method="avg", variants="format,demos", engine=engine)
    with pytest.raises(SelfEnsembleError, match="cannot weigh variants"):
        SelfEnsembleLM(method="weighted_avg", variants="format", engine=engine)


@pytest.mark.parametrize("method", ["avg", "flex"])
def test_generate_until_with_variants_matches_selfensemble_run(tmp_path, engine, method):
    """Every variant of a small product (2 formats × 2 orders of 2 demonstrations) through the adapter
    gives `run --variants format,order`'s answers: the same texts, the same tokens, the same fusion."""
    from selfensemble.config.load import LoadSpec
    from selfensemble.config.run import RunConfig
    from selfensemble.pipeline.experiment import SAMPLE_DATA, load_items, run_experiment

    cfg = RunConfig(dataset="jsonl", data_path=str(SAMPLE_DATA), limit=6, few_shot=2, num_paraphrases=4,
                    variants=["format", "order"], variant_levels=2, methods=[method], load=LoadSpec("random:llama"),
                    engine=EngineConfig(attention="sdpa"), max_new_tokens=6, out=str(tmp_path / "run"),
                    dataset_options={"paraphrase_columns": ["paraphrases"], "id_column": "id",
                                     "train_path": str(SAMPLE_DATA)})
    ds, items = load_items(cfg)
    docs = []
    for it in items:
        fmt = PromptFormat(instruction=ds.instruction, examples=tuple(ds.few_shot(it, cfg.few_shot, cfg.seed)))
        assert len(fmt.examples) == 2
        docs.append({"id": it.id, "prompt": fmt.prefix_text() + f"Q: {it.question}\nA:", "answers": list(it.answers)})
    folder = write_task(tmp_path / "tasks", "se_var", docs, **GEN_CONFIG)
    run_experiment(cfg, engine=engine)
    run = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "run" / method / "results.jsonl").read_text().splitlines()}
    assert all(len(r["variants"]) == 4 for r in run.values())

    adapter = SelfEnsembleLM(method=method, num_paraphrases=4, engine=engine, variants="order,format",
                             variant_levels=2)
    results = run_task(adapter, folder, "se_var")
    got = {s["doc"]["id"]: s["resps"][0][0] for s in results["samples"]["se_var"]}
    assert got == {i: r["generation"].split("\n")[0] for i, r in run.items()}
    counts = adapter.report()["counts"]
    assert (counts["with_variants"], counts["variants_unreadable"]) == (6, 0)
