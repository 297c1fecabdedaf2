"""Provenance that cannot be mixed: the report marks a cell whose records come from several sources,
a dirty tree or an unrecorded commit, and the confirm protocol refuses to add to such a cell or to
run from a dirty tree unless told to."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

import selfensemble.store.run_store as run_store
from selfensemble.analysis.report import report
from selfensemble.analysis.sources import cell_provenance, run_sources, source_key
from selfensemble.store.run_store import RunStore, load_run

ROOT = Path(__file__).resolve().parents[1]
V1 = {"python": "3.11", "selfensemble": "0.4.0", "torch": "2.13.0", "transformers": "5.24.0"}
V2 = {**V1, "selfensemble": "0.5.0"}
CLEAN = {"commit": "a" * 40, "dirty": False}


def _as(monkeypatch, versions: dict, source: dict) -> None:
    """Make the next RunStore sessions record these versions and source."""
    monkeypatch.setattr(run_store, "package_versions", lambda: dict(versions))
    monkeypatch.setattr(run_store, "source", lambda: dict(source))


def _write(folder: Path, method: str, ids, allow_mixed: bool = False) -> None:
    with RunStore(folder / method, {"method": method, "model": "m", "dataset": "toy"}, allow_mixed=allow_mixed) as s:
        for i in ids:
            s.append({"id": f"q{i}", "correct": i % 2 == 0})


def _cell(result: dict) -> dict:
    [cell] = result["provenance"]
    return cell


def test_one_source_is_not_marked(tmp_path, monkeypatch):
    _as(monkeypatch, V1, CLEAN)
    _write(tmp_path, "origin", range(6))
    _write(tmp_path, "avg", range(6))
    cell = _cell(report([tmp_path]))
    assert cell["flags"] == [] and len(cell["sources"]) == 1 and cell["sources"][0]["records"] == 12


def test_a_cell_from_two_versions_and_a_dirty_tree_is_marked(tmp_path, monkeypatch, capsys):
    from selfensemble.cli.report import show_report

    _as(monkeypatch, V1, CLEAN)
    _write(tmp_path, "origin", range(6))
    _as(monkeypatch, V2, {"commit": "b" * 40, "dirty": True})
    _write(tmp_path, "avg", range(6))
    result = report([tmp_path])
    cell = _cell(result)
    assert cell["mixed"] and cell["dirty"] and cell["flags"] == ["mixed", "dirty"]
    assert sorted((s["selfensemble"], s["runs"][0], s["records"]) for s in cell["sources"]) == [
        ("0.4.0", "origin", 6), ("0.5.0", "avg", 6)]
    assert any("provenance mixed, dirty" in n and "selfensemble 0.5.0" in n for n in result["notes"])
    show_report(result, "markdown")
    assert "### Accuracy — m, toy [provenance: mixed, dirty; see notes]" in capsys.readouterr().out


def test_records_resumed_under_another_version_carry_their_own_source(tmp_path, monkeypatch):
    _as(monkeypatch, V1, CLEAN)
    _write(tmp_path, "avg", range(4))
    _as(monkeypatch, V2, CLEAN)
    with pytest.raises(Exception, match="other versions"):
        _write(tmp_path, "avg", range(4, 10))
    _write(tmp_path, "avg", range(4, 10), allow_mixed=True)  # these 6 records carry provenance
    manifest, records, _ = load_run(tmp_path / "avg")
    counts = run_sources(manifest, records)
    assert counts == {source_key({"versions": V1, "source": CLEAN}): 4, source_key({"versions": V2, "source": CLEAN}): 6}
    assert cell_provenance([("avg", manifest, records)])["flags"] == ["mixed"]


def test_an_old_run_without_a_recorded_commit_is_marked_unknown(tmp_path):
    _write(tmp_path, "origin", range(3))
    manifest_path = tmp_path / "origin" / "manifest.json"
    import json

    manifest = json.loads(manifest_path.read_text())
    for entry in [manifest, *manifest["sessions"]]:
        entry.pop("source", None)  # as runs written before sources were recorded
    manifest_path.write_text(json.dumps(manifest))
    assert _cell(report([tmp_path]))["flags"] == ["unknown source"]


# -- the confirm protocol ----------------------------------------------------------------------


def _confirm():
    spec = importlib.util.spec_from_file_location("confirm", ROOT / "benchmarks" / "experiments" / "confirm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def test_confirm_refuses_a_dirty_tree_unless_allowed(tmp_path):
    confirm = _confirm()
    _git(tmp_path, "init", "-q")
    (tmp_path / "confirm.json").write_text("{}")
    _git(tmp_path, "add", "confirm.json")
    _git(tmp_path, "commit", "-qm", "x")
    confirm.check_clean_tree(tmp_path)  # clean: goes ahead
    (tmp_path / "untracked.txt").write_text("not part of the source")
    confirm.check_clean_tree(tmp_path)  # untracked files do not make it dirty
    (tmp_path / "confirm.json").write_text('{"changed": true}')
    with pytest.raises(SystemExit) as refused:
        confirm.check_clean_tree(tmp_path)
    assert "uncommitted changes" in str(refused.value) and "confirm.json" in str(refused.value)
    confirm.check_clean_tree(tmp_path, allow_dirty=True)
    assert confirm.source_commit(tmp_path).endswith("+dirty")


def test_confirm_refuses_to_mix_sources_in_a_cell_unless_allowed(tmp_path, monkeypatch):
    confirm = _confirm()
    cell = tmp_path / "smollm2-135m" / "pararel"

    def session_is(versions: dict, source: dict) -> None:  # what confirm.py's session would record
        monkeypatch.setattr("selfensemble.store.provenance.package_versions", lambda: dict(versions))
        monkeypatch.setattr("selfensemble.store.provenance.source", lambda: dict(source))

    session_is(V2, CLEAN)
    confirm.check_cell_sources(cell)  # nothing there yet
    _as(monkeypatch, V2, CLEAN)
    _write(cell, "origin", range(4))
    confirm.check_cell_sources(cell)  # the same source as this session
    session_is(V2, {"commit": "c" * 40, "dirty": False})
    with pytest.raises(SystemExit) as refused:  # same versions, another commit
        confirm.check_cell_sources(cell)
    assert "commit aaaaaaa" in str(refused.value) and "--allow-mixed" in str(refused.value)
    session_is(V2, {**CLEAN, "dirty": True})
    with pytest.raises(SystemExit):  # the same commit, modified
        confirm.check_cell_sources(cell)
    session_is(V2, CLEAN)
    _as(monkeypatch, V1, CLEAN)
    _write(cell, "avg", range(4))  # written by another version (as an earlier --allow-mixed run could)
    with pytest.raises(SystemExit) as refused:
        confirm.check_cell_sources(cell)
    assert "selfensemble 0.4.0" in str(refused.value)
    confirm.check_cell_sources(cell, allow_mixed=True)
    assert _cell(report([cell]))["flags"] == ["mixed"]  # and the report marks the cell
