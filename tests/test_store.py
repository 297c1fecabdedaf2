"""Resumable run store: a kill loses at most one line, and resuming never mixes settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from selfensemble.errors import SelfEnsembleError
from selfensemble.store.run_store import RunStore, load_run

CONFIG = {"method": "avg", "model": "tiny", "dataset": "toy", "num_paraphrases": 3, "seed": 0,
          "limit": 10, "batch_size": 4, "out": "runs/x"}
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _rec(i: int) -> dict:
    return {"id": f"q{i}", "prediction": f"answer {i}", "correct": i % 2 == 0, "seconds": 0.1}


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_fresh_run_writes_manifest_and_records(tmp_path):
    run = tmp_path / "run"
    with RunStore(run, CONFIG) as store:
        assert store.done_ids() == set()
        for i in range(3):
            store.append(_rec(i))
        store.write_metrics({"accuracy": 2 / 3})
        store.update_manifest(wall_time=1.5, attention_path="sdpa")
        assert [r["id"] for r in store.records()] == ["q0", "q1", "q2"]
    manifest, records, metrics = load_run(run)
    assert manifest["config"] == CONFIG
    assert manifest["seed"] == 0
    assert manifest["wall_time"] == 1.5 and manifest["attention_path"] == "sdpa"
    assert manifest["versions"]["python"] and "start_time" in manifest and "hostname" in manifest
    assert [r["id"] for r in records] == ["q0", "q1", "q2"]
    assert metrics == {"accuracy": 2 / 3}
    assert not list(run.glob("*.tmp")), "atomic writes must not leave temp files"


def test_resume_after_truncated_last_line(tmp_path):
    run = tmp_path / "run"
    with RunStore(run, CONFIG) as store:
        for i in range(3):
            store.append(_rec(i))
    results = run / "results.jsonl"
    good = results.read_bytes()
    with open(results, "ab") as f:  # what a kill -9 mid-write leaves behind
        f.write(b'{"id": "q3", "predic')

    store = RunStore(run, CONFIG)
    with pytest.warns(RuntimeWarning, match="incomplete last line"):
        store.open()
    assert store.done_ids() == {"q0", "q1", "q2"}
    assert len(store.repairs) == 1 and "q3" in store.repairs[0] and "line 4" in store.repairs[0]
    assert results.read_bytes() == good, "file must be cut back to the last complete line"
    store.append(_rec(3))
    with pytest.raises(ValueError, match="already"):
        store.append(_rec(1))
    store.close()
    ids = [json.loads(line)["id"] for line in _lines(results)]
    assert ids == ["q0", "q1", "q2", "q3"]


def test_valid_json_without_newline_is_also_dropped(tmp_path):
    run = tmp_path / "run"
    with RunStore(run, CONFIG) as store:
        store.append(_rec(0))
    with open(run / "results.jsonl", "ab") as f:
        f.write(json.dumps(_rec(1)).encode())  # killed between the JSON and its newline
    with pytest.warns(RuntimeWarning), RunStore(run, CONFIG) as store:
        assert store.done_ids() == {"q0"}


def test_invalid_complete_last_line_is_repaired(tmp_path):
    run = tmp_path / "run"
    with RunStore(run, CONFIG) as store:
        store.append(_rec(0))
    with open(run / "results.jsonl", "ab") as f:
        f.write(b'{"id": "q1", \x00garbage\n')
    with pytest.warns(RuntimeWarning), RunStore(run, CONFIG) as store:
        assert store.done_ids() == {"q0"}
    assert len(_lines(run / "results.jsonl")) == 1


def test_corrupt_middle_line_raises_with_line_number(tmp_path):
    run = tmp_path / "run"
    with RunStore(run, CONFIG) as store:
        for i in range(3):
            store.append(_rec(i))
    results = run / "results.jsonl"
    lines = _lines(results)
    lines[1] = lines[1][:10]
    results.write_text("\n".join(lines) + "\n", encoding="utf-8")
    before = results.read_bytes()
    with pytest.raises(SelfEnsembleError, match=r"results\.jsonl: line 2 is corrupt"):
        RunStore(run, CONFIG).open()
    assert results.read_bytes() == before, "a middle corruption must not be 'repaired' away"
    with pytest.raises(SelfEnsembleError, match="line 2"):
        load_run(run)


def test_config_mismatch_raises_and_names_keys(tmp_path):
    run = tmp_path / "run"
    with RunStore(run, CONFIG) as store:
        store.append(_rec(0))
    other = {**CONFIG, "method": "max", "num_paraphrases": 5}
    with pytest.raises(SelfEnsembleError) as e:
        RunStore(run, other).open()
    msg = str(e.value)
    assert "method" in msg and "num_paraphrases" in msg and "'avg'" in msg and "'max'" in msg
    assert "seed" not in msg
    missing = {k: v for k, v in CONFIG.items() if k != "seed"}
    with pytest.raises(SelfEnsembleError, match="seed"):
        RunStore(run, missing).open()


def test_volatile_keys_may_change_on_resume(tmp_path):
    run = tmp_path / "run"
    with RunStore(run, CONFIG) as store:
        store.append(_rec(0))
    bigger = {**CONFIG, "limit": 100, "batch_size": 16, "out": "elsewhere"}
    with RunStore(run, bigger) as store:
        assert store.done_ids() == {"q0"}
        assert store.manifest()["config"]["limit"] == 100
        assert len(store.manifest()["resumed_at"]) == 1


def test_duplicate_and_missing_id(tmp_path):
    with RunStore(tmp_path / "run", CONFIG) as store:
        store.append(_rec(0))
        with pytest.raises(ValueError, match="already"):
            store.append(_rec(0))
        with pytest.raises(ValueError, match='"id"'):
            store.append({"prediction": "x"})
        assert len(store.records()) == 1


def test_load_run_errors_and_readonly_partial_line(tmp_path):
    with pytest.raises(SelfEnsembleError, match="no such run directory"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SelfEnsembleError, match="results.jsonl"):
        load_run(tmp_path / "empty")
    run = tmp_path / "run"
    with RunStore(run, CONFIG) as store:
        store.append(_rec(0))
    with open(run / "results.jsonl", "ab") as f:
        f.write(b'{"id": "q1"')
    size = (run / "results.jsonl").stat().st_size
    with pytest.warns(RuntimeWarning, match="incomplete last line"):
        _, records, metrics = load_run(run)
    assert [r["id"] for r in records] == ["q0"] and metrics == {}
    assert (run / "results.jsonl").stat().st_size == size, "a reader must not truncate a writer's file"
    (run / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SelfEnsembleError, match="manifest is not valid JSON"):
        load_run(run)


_WRITER = textwrap.dedent(
    """
    import sys, time
    from selfensemble.store.run_store import RunStore
    store = RunStore(sys.argv[1], {"method": "avg", "model": "tiny"}).open()
    start = len(store.done_ids())
    print("ready", flush=True)
    i = start
    while True:
        # long-ish lines make it likelier that the kill lands mid-write
        store.append({"id": f"q{i}", "i": i, "payload": "x" * 20000})
        i += 1
        time.sleep(0.002)
    """
)


def _kill_writer(run: Path, after: float) -> None:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(run)], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(after)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.filterwarnings("ignore:.*incomplete last line:RuntimeWarning")
def test_real_sigkill_then_resume(tmp_path):
    run = tmp_path / "run"
    for round_ in range(3):
        _kill_writer(run, after=0.3 + 0.1 * round_)
        # every complete line is valid JSON (a trailing partial one may exist before repair)
        with RunStore(run, {"method": "avg", "model": "tiny"}) as store:
            ids = store.done_ids()
            records = store.records()
        raw = (run / "results.jsonl").read_bytes()
        assert raw.endswith(b"\n")
        lines = raw.decode("utf-8").splitlines()
        parsed = [json.loads(line) for line in lines]
        assert [r["i"] for r in parsed] == list(range(len(parsed))), "ids must be contiguous from the start"
        assert len(ids) == len(parsed) == len(records) > 0
    assert len({r["id"] for r in parsed}) == len(parsed)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.filterwarnings("ignore:.*incomplete last line:RuntimeWarning")
def test_second_process_is_refused_while_first_writes(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(run)], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        with pytest.raises(SelfEnsembleError, match="in use by another process"):
            RunStore(run, {"method": "avg", "model": "tiny"}).open()
        deadline = time.time() + 60  # on a busy machine the writer may not have written yet
        results = run / "results.jsonl"
        while time.time() < deadline and not (results.exists() and b"\n" in results.read_bytes()):
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # the kernel drops the lock with the process, so a resume works right after a kill
    with RunStore(run, {"method": "avg", "model": "tiny"}) as store:
        assert store.done_ids()


def test_attention_path_change_refused_or_stamped_per_record(tmp_path):
    """The first session's attention key stays in the manifest; another one needs allow_mixed."""
    with RunStore(tmp_path, {"method": "flex"}, attention_path="flex-compiled") as store:
        store.append({"id": "a"})
    with pytest.raises(SelfEnsembleError, match="attention_path: run has 'prefill flex-compiled, decode sdpa-dense', "
                                                "now 'prefill sdpa-dense, decode sdpa-dense'"):
        RunStore(tmp_path, {"method": "flex"}, attention_path="sdpa-dense").open()
    with RunStore(tmp_path, {"method": "flex"}, attention_path="sdpa-dense", allow_mixed=True) as store:
        assert store.mixed
        store.append({"id": "b"})
        store.append({"id": "c", "provenance": {"attention_path": "from the source run"}})  # kept as given
        records = store.records()
    assert "provenance" not in records[0]
    assert records[1]["provenance"]["attention_path"] == {"prefill": "sdpa-dense", "decode": "sdpa-dense"}
    assert records[2]["provenance"] == {"attention_path": "from the source run"}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["attention_path"] == {"prefill": "flex-compiled", "decode": "sdpa-dense"}
    assert manifest["mixed"] is True
    with RunStore(tmp_path, {"method": "flex"}, attention_path="flex-compiled") as store:
        assert not store.mixed  # the original path resumes as before


OLD_NOTE = "sdpa (dense mask; default on CPU, use --attention flex to try compiled flex)"


def _legacy_run(folder: Path, note: str) -> None:
    """A run folder as written before attention keys: the manifest holds the human sentence."""
    with RunStore(folder, {"method": "flex"}, attention_path="sdpa-dense") as store:
        store.append({"id": "a"})
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["attention_path"] = note
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_resume_compares_the_attention_key_not_its_sentence(tmp_path):
    _legacy_run(tmp_path, OLD_NOTE)
    with RunStore(tmp_path, {"method": "flex"}, attention_path="sdpa-dense") as store:  # the same path, reworded
        assert not store.mixed
        store.append({"id": "b"})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["attention_path"] == {"prefill": "sdpa-dense", "decode": "sdpa-dense"}  # mapped once
    assert manifest["attention_note"] == OLD_NOTE
    with pytest.raises(SelfEnsembleError, match="attention_path: run has 'prefill sdpa-dense, decode sdpa-dense', "
                                                "now 'prefill fallback-sdpa, decode sdpa-dense'"):
        RunStore(tmp_path, {"method": "flex"}, attention_path="fallback-sdpa").open()
    assert [r["id"] for r in RunStore(tmp_path, {"method": "flex"}).records()] == ["a", "b"]


def test_a_one_key_manifest_reads_as_that_prefill_with_the_dense_decode(tmp_path):
    """Folders written before decode was named apart stored the prefill's key alone; every decode step
    then ran SDPA with a dense mask, eagerly: the same paths as an eager engine now, not a compiled one."""
    _legacy_run(tmp_path, "flex-compiled")
    paths = {"prefill": "flex-compiled", "decode": "sdpa-dense"}
    with RunStore(tmp_path, {"method": "flex"}, attention_path=paths) as store:
        assert not store.mixed
    assert json.loads((tmp_path / "manifest.json").read_text())["attention_path"] == paths
    assert "attention_note" not in json.loads((tmp_path / "manifest.json").read_text())  # a key, not a sentence
    with pytest.raises(SelfEnsembleError, match="now 'prefill flex-compiled, decode sdpa-dense-compiled'"):
        RunStore(tmp_path, {"method": "flex"}, attention_path={**paths, "decode": "sdpa-dense-compiled"}).open()


@pytest.mark.parametrize("note, key", [
    (OLD_NOTE, "sdpa-dense"), ("sdpa (dense mask, as requested)", "sdpa-dense"),
    ("sdpa (FALLBACK: flex failed: BackendCompilerFailed: …)", "fallback-sdpa"),
    ("flex (compiled FlexAttention)", "flex-compiled"), ("flex (eager)", "flex-eager"),
    ("flex (compiled FlexAttention) | sdpa (FALLBACK: x)", "flex-compiled | fallback-sdpa"),
    ("flex-eager", "flex-eager"), ("something else", "something else")])
def test_old_attention_sentences_map_to_keys(note, key):
    from selfensemble.store.provenance import attention_key

    assert attention_key(note) == key


def test_manifest_records_the_source_commit_or_a_source_hash(tmp_path, monkeypatch):
    from selfensemble.store import provenance

    with RunStore(tmp_path / "git", {"method": "flex"}):
        pass
    manifest = json.loads((tmp_path / "git" / "manifest.json").read_text())
    assert manifest["source"] == provenance.source() and manifest["sessions"][0]["source"] == provenance.source()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(provenance.__file__).parent, capture_output=True,
                          text=True).stdout.strip()
    if head:  # a git checkout: HEAD itself
        assert manifest["source"]["commit"] == head
    provenance.source.cache_clear()
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(OSError("no git")))
    try:
        hashed = provenance.source()
    finally:
        provenance.source.cache_clear()
    assert set(hashed) == {"sha256"} and len(hashed["sha256"]) == 16
