"""Dataset loaders: fixture files, broken records, and the shared real data when present."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from helpers import make_pararel, write_jsonl
from selfensemble.data import DATASETS, Dataset, default_data_dir, load_dataset
from selfensemble.data._common import fill_template
from selfensemble.errors import SelfEnsembleError

FIXTURES = Path(__file__).parent / "data"
MYRIAD = FIXTURES / "myriadlama_sample.jsonl"

DATA_DIR = default_data_dir()
needs_webqa = pytest.mark.skipif(
    DATA_DIR is None or not (DATA_DIR / "webquestions" / "test.jsonl").is_file(),
    reason="shared WebQuestions data not found (set SELFENSEMBLE_DATA_DIR or place it at ../shared/data)",
)
needs_pararel = pytest.mark.skipif(
    DATA_DIR is None or not (DATA_DIR / "pararel" / "patterns").is_dir(),
    reason="shared ParaRel data not found (set SELFENSEMBLE_DATA_DIR or place it at ../shared/data)",
)


@pytest.fixture
def webqa_dir(tmp_path: Path) -> Path:
    write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"id": "tr0", "question": "who wrote hamlet?", "answers": ["William Shakespeare"]},
            {"id": "tr1", "question": "what is the capital of peru?", "answers": ["Lima"]},
        ],
    )
    write_jsonl(
        tmp_path / "test.jsonl",
        [
            {"id": "t0", "question": "where is the eiffel tower?", "answers": ["Paris", "Paris, France"]},
            "",
            {"question": "what language do brazilians speak?", "answers": ["Portuguese"]},
        ],
    )
    return tmp_path


@pytest.fixture
def pararel_dir(tmp_path: Path) -> Path:
    facts = {
        "P20": [(f"Person {i}", f"City{i}", f"u20-{i}") for i in range(8)],
        "P36": [(f"Country {i}", f"Capital{i}", f"u36-{i}") for i in range(6)],
    }
    patterns = {
        "P20": [
            "[X] died in [Y] .",
            "[X] passed away in [Y].",
            "[X] died in [Y].",
            "[X] lost their life in [Y].",
        ],
        "P36": ["The capital of [X] is [Y].", "[X]'s capital is [Y]."],
    }
    return make_pararel(tmp_path / "pararel", patterns, facts)


# --------------------------------------------------------------------------- registry


def test_registry_lists_all_loaders() -> None:
    assert set(DATASETS) == {"webqa", "pararel", "myriadlama", "jsonl", "csv"}


def test_unknown_dataset_suggests_close_name() -> None:
    with pytest.raises(SelfEnsembleError) as err:
        load_dataset("pararell")
    msg = str(err.value)
    assert "Did you mean 'pararel'" in msg
    assert "webqa" in msg and "myriadlama" in msg


def test_default_data_dir_env_var_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SELFENSEMBLE_DATA_DIR", str(tmp_path / "elsewhere"))
    assert default_data_dir() == tmp_path / "elsewhere"


def test_default_data_dir_walks_up_from_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SELFENSEMBLE_DATA_DIR", raising=False)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    deep = tmp_path / "proj" / "sub"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    found = default_data_dir()
    # The package's own repository may also sit next to a shared/data; cwd is searched first.
    assert found == (tmp_path / "shared" / "data").resolve()


def test_unknown_option_is_rejected(webqa_dir: Path) -> None:
    with pytest.raises(SelfEnsembleError, match="Unknown option 'relation'.*Did you mean 'relations'"):
        load_dataset("pararel", webqa_dir, relation=["P20"])


# --------------------------------------------------------------------------- webqa


def test_webqa_local_folder(webqa_dir: Path) -> None:
    ds = load_dataset("webqa", webqa_dir)
    assert isinstance(ds, Dataset)
    assert [it.id for it in ds.items] == ["t0", "test-3"]  # missing id -> split-line_no
    assert ds.items[0].prompts == ("where is the eiffel tower?",)
    assert ds.items[0].answers == ("Paris", "Paris, France")
    assert [ex.answer for ex in ds.examples[""]] == ["William Shakespeare", "Lima"]
    assert ds.instruction


def test_webqa_train_split_and_limit(webqa_dir: Path) -> None:
    ds = load_dataset("webqa", webqa_dir, split="train", limit=1)
    assert [it.id for it in ds.items] == ["tr0"]
    # few-shot never shows the item its own question
    assert all(ex.prompts != ds.items[0].prompts for ex in ds.few_shot(ds.items[0], k=5))


def test_webqa_missing_folder_names_path(tmp_path: Path) -> None:
    with pytest.raises(SelfEnsembleError, match=str(tmp_path / "nope")):
        load_dataset("webqa", tmp_path / "nope")


def test_webqa_bad_split(webqa_dir: Path) -> None:
    with pytest.raises(SelfEnsembleError, match="Unknown split 'tset'.*Did you mean 'test'"):
        load_dataset("webqa", webqa_dir, split="tset")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"question": "q?", "answers": ["a"]', "invalid JSON"),
        ('["q?", ["a"]]', "expected a JSON object"),
        ('{"answers": ["a"]}', "missing field 'question'"),
        ('{"question": "   ", "answers": ["a"]}', "field 'question' is empty"),
        ('{"question": "q?"}', "missing field 'answers'"),
        ('{"question": "q?", "answers": "a"}', "field 'answers' should be a list of strings"),
        ('{"question": "q?", "answers": [1, 2]}', "field 'answers' should be a list of strings"),
        ('{"question": "q?", "answers": []}', "field 'answers' is an empty list"),
    ],
)
def test_webqa_bad_record_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    write_jsonl(tmp_path / "test.jsonl", [{"question": "fine?", "answers": ["yes"]}, line])
    with pytest.raises(SelfEnsembleError) as err:
        load_dataset("webqa", tmp_path)
    assert f"test.jsonl:2: {problem}" in str(err.value)


@needs_webqa
def test_webqa_real_data() -> None:
    ds = load_dataset("webqa")
    assert len(ds.items) == 1000
    assert all(it.answers and all(a.strip() for a in it.answers) for it in ds.items)
    assert len({it.id for it in ds.items}) == 1000
    assert len(ds.examples[""]) == 3778
    assert len(load_dataset("webqa", limit=25).items) == 25


# --------------------------------------------------------------------------- pararel


def test_fill_template_tidies_text() -> None:
    assert fill_template("[X] died in [Y] .", "Ada") == "Ada died in [MASK]."
    assert fill_template("[X] is an [Y] by profession.", "Ada") == "Ada is a(n) [MASK] by profession."
    assert fill_template("the capital of [X] is [Y].", "Peru") == "The capital of Peru is [MASK]."


def test_pararel_items_and_prompts(pararel_dir: Path) -> None:
    ds = load_dataset("pararel", pararel_dir, num_train=2, demo="single")
    assert ds.instruction == "Predict the [MASK] in the sentence in one word."
    assert Counter(it.group for it in ds.items) == {"P20": 6, "P36": 4}
    item = next(it for it in ds.items if it.group == "P20")
    subject = item.meta["subject"]
    # "[X] died in [Y] ." and "[X] died in [Y]." collapse into one prompt
    assert item.prompts == (
        f"{subject} died in [MASK].",
        f"{subject} passed away in [MASK].",
        f"{subject} lost their life in [MASK].",
    )
    assert item.id.startswith("P20:u20-")
    assert item.answers == (f"City{subject.split()[-1]}",)


def test_pararel_split_is_disjoint_deterministic_and_seeded(pararel_dir: Path) -> None:
    test_a = load_dataset("pararel", pararel_dir, num_train=2, seed=0)
    test_b = load_dataset("pararel", pararel_dir, num_train=2, seed=0)
    train = load_dataset("pararel", pararel_dir, num_train=2, seed=0, split="train")
    assert [it.id for it in test_a.items] == [it.id for it in test_b.items]
    test_ids = {it.id for it in test_a.items}
    train_ids = {it.id for it in train.items}
    assert not test_ids & train_ids
    assert len(test_ids | train_ids) == 14
    # the few-shot pool is exactly the train facts of the relation
    pool_answers = {ex.answer for ex in test_a.examples["P20"]}
    assert pool_answers == {it.answers[0] for it in train.items if it.group == "P20"}
    assert all(len(ex.prompts) == 1 for ex in test_a.examples["P20"])  # default demo style "instruct"
    splits = {
        frozenset(
            it.id for it in load_dataset("pararel", pararel_dir, num_train=2, seed=s, split="train").items
        )
        for s in range(6)
    }
    assert len(splits) > 1  # the seed really moves the split


def test_pararel_demo_styles(pararel_dir: Path) -> None:
    """Few-shot demonstrations: one template, three, the completed sentence, another instruction (default)."""
    single = load_dataset("pararel", pararel_dir, num_train=2, demo="single")
    multi = load_dataset("pararel", pararel_dir, num_train=2, demo="multi")
    sentence = load_dataset("pararel", pararel_dir, num_train=2, demo="sentence")
    instruct = load_dataset("pararel", pararel_dir, num_train=2)
    assert [len(ex.prompts) for ex in single.examples["P20"]] == [1, 1]
    assert [len(ex.prompts) for ex in multi.examples["P20"]] == [3, 3]
    for ex in sentence.examples["P20"]:
        assert "[MASK]" not in ex.answer and ex.answer == ex.prompts[0].replace("[MASK]", ex.answer.split()[-1][:-1])
    assert [ex.answer for ex in single.examples["P20"]] == [ex.answer for ex in instruct.examples["P20"]]
    assert instruct.instruction != single.instruction and "[MASK]" in instruct.instruction
    assert [it.id for it in single.items] == [it.id for it in multi.items]  # same facts, only the demos differ
    with pytest.raises(SelfEnsembleError, match="Did you mean 'single'"):
        load_dataset("pararel", pararel_dir, demo="singel")


def test_pararel_limit_round_robins_relations(pararel_dir: Path) -> None:
    ds = load_dataset("pararel", pararel_dir, num_train=2, limit=5)
    assert Counter(it.group for it in ds.items) == {"P20": 3, "P36": 2}


def test_pararel_options(pararel_dir: Path) -> None:
    ds = load_dataset(
        "pararel", pararel_dir, relations=["P36"], max_templates=1, max_facts_per_relation=3, num_train=2
    )
    assert {it.group for it in ds.items} == {"P36"}
    assert len(ds.items) == 3
    assert all(len(it.prompts) == 1 for it in ds.items)
    with pytest.raises(SelfEnsembleError, match="Unknown ParaRel relation 'P19'.*available: P20, P36"):
        load_dataset("pararel", pararel_dir, relations=["P19"])


def test_pararel_bad_pattern_and_fact(tmp_path: Path) -> None:
    root = make_pararel(tmp_path / "a", {"P1": ["[X] is [Y]."]}, {"P1": [("s", "o", "u1")]})
    write_jsonl(root / "patterns" / "P1.jsonl", [{"pattern": "[X] is [Y]."}, {"pattern": "no slots"}])
    with pytest.raises(SelfEnsembleError, match=r"P1\.jsonl:2: pattern 'no slots' must contain"):
        load_dataset("pararel", root)

    root = make_pararel(tmp_path / "b", {"P1": ["[X] is [Y]."]}, {"P1": [("s", "o", "u1")]})
    write_jsonl(
        root / "facts" / "P1.jsonl", [{"sub_label": "s", "obj_label": "o", "uuid": "u1"}, {"sub_label": "s"}]
    )
    with pytest.raises(SelfEnsembleError, match=r"facts/P1\.jsonl:2: missing field 'obj_label'"):
        load_dataset("pararel", root)

    root = make_pararel(tmp_path / "c", {"P1": ["[X] is [Y]."]}, {"P1": [("s", "o", "u1"), ("t", "p", "u1")]})
    with pytest.raises(SelfEnsembleError, match=r"P1\.jsonl:2: duplicate uuid 'u1'"):
        load_dataset("pararel", root)

    with pytest.raises(SelfEnsembleError, match="ParaRel patterns folder not found"):
        load_dataset("pararel", tmp_path)


@needs_pararel
def test_pararel_real_data() -> None:
    ds = load_dataset("pararel", limit=300)
    assert len(ds.items) == 300
    assert len({it.group for it in ds.items}) >= 10  # the limit spreads over relations
    multi = [it for it in ds.items if len(it.prompts) >= 2]
    assert len(multi) > 250  # only relations with a single template give one prompt
    for it in ds.items:
        assert all("[MASK]" in p and it.meta["subject"] in p for p in it.prompts)
        assert len(set(it.prompts)) == len(it.prompts)
        assert it.answers and it.id.startswith(f"{it.group}:")
        shots = ds.few_shot(it, k=3)
        assert 1 <= len(shots) <= 3  # per item: the relation's pool, the item's own fact left out
        for ex in shots:
            assert ex.fact != it.meta["subject"]
            assert it.question not in ex.prompts
            # same relation: its answer is an object of that relation's pool, not another one's
            assert ex in ds.examples[it.group]
            assert not set(ex.prompts) & set(it.prompts)
    train_ids = {it.id for it in load_dataset("pararel", split="train").items}
    assert not train_ids & {it.id for it in load_dataset("pararel").items}


# --------------------------------------------------------------------------- myriadlama


def test_myriadlama_manual_templates() -> None:
    ds = load_dataset("myriadlama", MYRIAD, num_train=1)
    assert {it.group for it in ds.items} == {"P36", "P19"}
    assert len(ds.items) == 6  # 4 facts per relation, 1 held out each
    everything = {it.id: it for it in load_dataset("myriadlama", MYRIAD, num_train=0).items}
    assert len(everything) == 8
    france = everything["P36:P36-france"]
    assert france.prompts == ("The capital of France is [MASK].", "France's capital is [MASK].")
    assert everything["P36:P36-japan"].meta["subject"] == "Japan"  # sub_ent given as a plain string
    assert everything["P36:P36-italy"].answers == ("Rome", "Roma")
    assert everything["P19:P19-dali"].prompts[0] == "Salvador Dalí was born in [MASK]."
    assert "[MASK]" in ds.instruction


def test_myriadlama_template_modes() -> None:
    auto = load_dataset("myriadlama", MYRIAD, templates="auto", num_train=0)
    assert all(len(it.prompts) == 3 for it in auto.items)
    mixed = load_dataset("myriadlama", MYRIAD, templates="mixed", num_auto=2, num_train=0)
    assert all(len(it.prompts) == 4 for it in mixed.items)
    manual = load_dataset("myriadlama", MYRIAD, num_train=0)
    for m, x in zip(manual.items, mixed.items, strict=True):
        assert x.prompts[:2] == m.prompts  # manual templates first, original question = prompt 0
    again = load_dataset("myriadlama", MYRIAD, templates="mixed", num_auto=2, num_train=0)
    assert [it.prompts for it in again.items] == [it.prompts for it in mixed.items]
    samples = {
        tuple(
            it.prompts
            for it in load_dataset(
                "myriadlama", MYRIAD, templates="mixed", num_auto=1, num_train=0, seed=s
            ).items
        )
        for s in range(5)
    }
    assert len(samples) > 1  # the seed picks which automatic templates join
    with pytest.raises(SelfEnsembleError, match="Did you mean 'mixed'"):
        load_dataset("myriadlama", MYRIAD, templates="mixd")


def test_myriadlama_few_shot_pool_is_multi_prompt_and_disjoint() -> None:
    ds = load_dataset("myriadlama", MYRIAD, num_train=2, templates="mixed", num_auto=3, demo="multi")
    for it in ds.items:
        pool = ds.examples[it.group]
        assert len(pool) == 2
        assert all(len(ex.prompts) == 3 for ex in pool)
        assert all(it.meta["subject"] not in " ".join(ex.prompts) for ex in pool)


def test_myriadlama_parquet_and_folder(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rows = [json.loads(line) for line in MYRIAD.read_text().splitlines()]
    for r in rows:  # parquet can't mix dict and str in one column
        if isinstance(r["sub_ent"], str):
            r["sub_ent"] = {"uri": "", "label": r["sub_ent"]}
    pd.DataFrame(rows).to_parquet(tmp_path / "part-0.parquet")
    from_parquet = load_dataset("myriadlama", tmp_path, num_train=1)
    from_jsonl = load_dataset("myriadlama", MYRIAD, num_train=1)
    assert [(it.id, it.prompts, it.answers) for it in from_parquet.items] == [
        (it.id, it.prompts, it.answers) for it in from_jsonl.items
    ]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"template": "[X] has no object slot."}, "has no [Y]"),
        ({"obj_aliases": "Paris"}, "'obj_aliases' should be a list of strings"),
        ({"is_manual": "yes"}, "'is_manual' should be true/false"),
        ({"sub_ent": {"uri": "Q1"}}, "'sub_ent' has no label"),
        ({"rel_uri": ""}, "field 'rel_uri' is empty"),
    ],
)
def test_myriadlama_bad_rows(tmp_path: Path, change: dict, problem: str) -> None:
    good = json.loads(MYRIAD.read_text().splitlines()[0])
    write_jsonl(tmp_path / "m.jsonl", [good, {**good, **change}])
    with pytest.raises(SelfEnsembleError) as err:
        load_dataset("myriadlama", tmp_path / "m.jsonl")
    assert "m.jsonl:2:" in str(err.value) and problem in str(err.value)


def test_myriadlama_hub_needs_datasets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SELFENSEMBLE_DATA_DIR", str(tmp_path))
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)
    with pytest.raises(SelfEnsembleError, match="datasets.*--data-path"):
        load_dataset("myriadlama")


# --------------------------------------------------------------------------- jsonl / csv


def test_jsonl_user_file_with_paraphrase_list(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {
                "qid": "a",
                "q": "Who painted the Mona Lisa?",
                "gold": ["Leonardo da Vinci"],
                "para": ["Which artist painted the Mona Lisa?", "Who painted the Mona Lisa?"],
            },
            {"qid": "b", "q": "Capital of Peru?", "gold": "Lima", "para": []},
        ],
    )
    ds = load_dataset(
        "jsonl", f, question_column="q", answers_column="gold", paraphrase_columns="para", id_column="qid"
    )
    assert [it.id for it in ds.items] == ["a", "b"]
    assert ds.items[0].prompts == ("Who painted the Mona Lisa?", "Which artist painted the Mona Lisa?")
    assert ds.items[1].answers == ("Lima",)
    assert ds.examples == {}


def test_csv_user_file_with_columns_and_train_path(tmp_path: Path) -> None:
    body = "id,question,answers,p1,p2\n1,Where is Lyon?,France|French Republic,Lyon is in which country?,\n2,Who wrote Emma?,Jane Austen,Emma was written by whom?,Who is Emma's author?\n"
    (tmp_path / "q.csv").write_text(body)
    (tmp_path / "train.csv").write_text("question,answers\nCapital of Spain?,Madrid\n")
    ds = load_dataset(
        "csv",
        tmp_path / "q.csv",
        paraphrase_columns=["p1", "p2"],
        id_column="id",
        train_path=str(tmp_path / "train.csv"),
    )
    assert ds.items[0].answers == ("France", "French Republic")
    assert ds.items[0].prompts == ("Where is Lyon?", "Lyon is in which country?")  # empty cell skipped
    assert len(ds.items[1].prompts) == 3
    assert [ex.answer for ex in ds.examples[""]] == ["Madrid"]
    assert len(load_dataset("csv", tmp_path / "q.csv", limit=1).items) == 1


def test_tabular_errors(tmp_path: Path) -> None:
    (tmp_path / "q.csv").write_text("question,answers\nWhere?,Here\n,There\n")
    with pytest.raises(SelfEnsembleError, match=r"q\.csv:3: question column 'question' is empty"):
        load_dataset("csv", tmp_path / "q.csv")
    (tmp_path / "r.csv").write_text("query,answers\nWhere?,Here\n")
    with pytest.raises(SelfEnsembleError, match=r"r\.csv:2: missing question column 'question'"):
        load_dataset("csv", tmp_path / "r.csv")
    (tmp_path / "s.csv").write_text("question,answers\nWhere?,|\n")
    with pytest.raises(SelfEnsembleError, match=r"s\.csv:2: answers column 'answers' is empty"):
        load_dataset("csv", tmp_path / "s.csv")
    write_jsonl(
        tmp_path / "d.jsonl",
        [{"id": 1, "question": "a?", "answers": ["x"]}, {"id": 1, "question": "b?", "answers": ["y"]}],
    )
    with pytest.raises(SelfEnsembleError, match=r"d\.jsonl:2: duplicate id '1'"):
        load_dataset("jsonl", tmp_path / "d.jsonl", id_column="id")
    with pytest.raises(SelfEnsembleError, match="needs a file"):
        load_dataset("jsonl")
    with pytest.raises(SelfEnsembleError, match=str(tmp_path / "missing.jsonl")):
        load_dataset("jsonl", tmp_path / "missing.jsonl")


def test_tabular_without_gold(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "q.jsonl", [{"question": "Why?"}])
    ds = load_dataset("jsonl", f, answers_column=None)
    assert ds.items[0].answers == ()


def test_thousand_items_all_read(tmp_path: Path) -> None:
    """Every item and its paraphrase arrive (load time is measured in benchmarks/checks/data_load.py)."""
    rows = [
        {"question": f"Question number {i}?", "answers": [str(i)], "para": [f"Q {i}?"]} for i in range(1000)
    ]
    f = write_jsonl(tmp_path / "big.jsonl", rows)
    ds = load_dataset("jsonl", f, paraphrase_columns="para")
    assert len(ds.items) == 1000
    assert ds.items[999].prompts == ("Question number 999?", "Q 999?") and ds.items[999].answers == ("999",)


def test_pararel_pool_avoids_subjects_shared_with_test_items(tmp_path: Path) -> None:
    facts = [("France", f"Neighbour{i}", f"fr-{i}") for i in range(4)]
    facts += [(f"Country {i}", f"Other{i}", f"c-{i}") for i in range(4)]
    root = make_pararel(tmp_path / "p", {"P47": ["[X] shares a border with [Y]."]}, {"P47": facts})
    for seed in range(5):
        ds = load_dataset("pararel", root, num_train=3, seed=seed)
        pool_subjects = {ex.prompts[0].split(" shares")[0] for ex in ds.examples["P47"]}
        assert len(ds.examples["P47"]) == 3
        assert "France" not in pool_subjects
        assert {it.meta["subject"] for it in ds.items}.isdisjoint(pool_subjects)


# --------------------------------------------------------------------------- demonstrations and splits


@pytest.fixture
def skewed_pararel(tmp_path: Path) -> Path:
    """12 facts of one relation whose objects repeat (City0, City1, City2): answers leak if demos are shared."""
    facts = {"P20": [(f"Person {i}", f"City{i % 3}", f"u20-{i}") for i in range(12)]}
    return make_pararel(tmp_path / "pararel", {"P20": ["[X] died in [Y].", "[X] passed away in [Y]."]}, facts)


def test_shared_demos_reproduce_the_older_draw(skewed_pararel: Path) -> None:
    """--demos shared: the exact demonstrations the per-group draw gave before per-item demos existed."""
    ds = load_dataset("pararel", skewed_pararel, demo="single")
    want = [(("Person 3 passed away in [MASK].",), "City0"), (("Person 0 died in [MASK].",), "City0"),
            (("Person 1 passed away in [MASK].",), "City1")]
    for it in ds.items:
        assert [(ex.prompts, ex.answer) for ex in ds.few_shot(it, 3, 0, demos="shared")] == want


def test_per_item_demos_are_a_seeded_sample_of_the_pool_and_differ_between_items(skewed_pararel: Path) -> None:
    """The per-item draw is random.Random(f"{seed}:{group}:{id}").sample over the pool (the item's own
    fact left out): written out here as the reference. The gold may be among them (the relation's prior)."""
    import random

    ds = load_dataset("pararel", skewed_pararel, demo="single")
    sets = []
    for it in ds.items:
        shots = ds.few_shot(it, 3, 0)
        again = load_dataset("pararel", skewed_pararel, demo="single").few_shot(it, 3, 0)
        assert shots == again  # deterministic across loads (and runs: seeded by text, not by hash())
        pool = [ex for ex in ds.examples[it.group] if ex.fact != it.meta["subject"]]
        assert shots == random.Random(f"0:{it.group}:{it.id}").sample(pool, 3)
        assert all(it.question not in ex.prompts and it.meta["subject"] not in ex.prompts[0] for ex in shots)
        sets.append(tuple(ex.prompts for ex in shots))
    assert len(set(sets)) > 1  # items of one group get different demonstration sets
    assert ds.few_shot(ds.items[0], 3, 1) != ds.few_shot(ds.items[0], 3, 0) or len(set(sets)) > 1


def test_unknown_demo_mode_is_a_clear_error(skewed_pararel: Path) -> None:
    ds = load_dataset("pararel", skewed_pararel)
    with pytest.raises(SelfEnsembleError, match="per-item"):
        ds.few_shot(ds.items[0], 3, 0, demos="per_item")


def test_dev_and_heldout_partition_the_test_split(webqa_dir: Path, skewed_pararel: Path) -> None:
    from selfensemble.data import _common

    for name, path, size in (("webqa", webqa_dir, "webqa"), ("pararel", skewed_pararel, "cloze")):
        test = [it.id for it in load_dataset(name, path, split="test").items]
        old = _common.DEV_ITEMS[size]
        try:
            _common.DEV_ITEMS[size] = 1  # small fixtures: the first test item of each group is dev
            dev = [it.id for it in load_dataset(name, path, split="dev").items]
            held = [it.id for it in load_dataset(name, path, split="heldout").items]
        finally:
            _common.DEV_ITEMS[size] = old
        assert len(dev) == 1 and sorted(dev + held) == sorted(test)
        assert held == [i for i in test if i not in dev]  # file order kept
        if name == "webqa":
            assert dev == test[:1]


@needs_pararel
def test_real_splits_are_stable_and_disjoint() -> None:
    dev = load_dataset("pararel", split="dev")
    held = load_dataset("pararel", split="heldout")
    assert not {i.id for i in dev.items} & {i.id for i in held.items}
    counts = Counter(i.group for i in dev.items)
    assert max(counts.values()) == 20 and len(counts) == 31
