"""Helpers shared by several test modules (pytest puts tests/ on sys.path: ``from helpers import ...``).

Fixtures live in conftest.py; these are plain functions: data files written for a test, the run
configuration over the bundled sample data, and a live HTTP server around an app.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

# -- data files -------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list) -> Path:
    """One JSON line per row (a str row is written as it is, e.g. a broken record)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def make_pararel(root: Path, patterns: dict[str, list[str]], facts: dict[str, list[tuple]]) -> Path:
    """A ParaRel folder: patterns/<rel>.jsonl (one template a line) and facts/<rel>.jsonl
    ((subject, object, uuid) each)."""
    (root / "patterns").mkdir(parents=True)
    (root / "facts").mkdir()
    for rel, pats in patterns.items():
        write_jsonl(root / "patterns" / f"{rel}.jsonl", [{"pattern": p} for p in pats])
    for rel, rows in facts.items():
        write_jsonl(root / "facts" / f"{rel}.jsonl", [{"sub_label": s, "obj_label": o, "uuid": u} for s, o, u in rows])
    return root


# -- a run over the bundled sample data -------------------------------------------------------------

#: how the bundled sample file (experiment.SAMPLE_DATA) names its paraphrase and id columns
SAMPLE_OPTS = {"paraphrase_columns": ["paraphrases"], "id_column": "id"}


def sample_run(out: Path, **fields):
    """The RunConfig of a run over the bundled sample data on a random llama (3 prompts a question, no
    few-shot, 3 new tokens, origin only), writing to ``out``; ``fields`` replace any of these."""
    from selfensemble.config.engine import EngineConfig
    from selfensemble.config.load import LoadSpec
    from selfensemble.config.run import RunConfig
    from selfensemble.pipeline.experiment import SAMPLE_DATA

    base = dict(dataset="jsonl", data_path=str(SAMPLE_DATA), dataset_options=SAMPLE_OPTS, num_paraphrases=3,
                few_shot=0, load=LoadSpec("random:llama"), engine=EngineConfig(attention="sdpa", batch_size=4),
                max_new_tokens=3, out=str(out), methods=["origin"])
    return RunConfig(**{**base, **fields})


# -- a live server -----------------------------------------------------------------------------------


def start_server(app, grace_s: float | None = None) -> SimpleNamespace:
    """`selfensemble serve`'s uvicorn server of ``app`` (serve.server) in a daemon thread on 127.0.0.1
    and a free port, returned once it accepts connections: ``url``, ``server`` (set its
    ``should_exit`` to stop it, as SIGTERM does) and ``thread``. ``grace_s``: serve.server's
    (its default when None)."""
    import socket
    import threading
    import time

    from selfensemble.serve import server as make_server

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    srv = make_server(app) if grace_s is None else make_server(app, grace_s=grace_s)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    return SimpleNamespace(url=f"http://127.0.0.1:{sock.getsockname()[1]}", server=srv, thread=thread)
