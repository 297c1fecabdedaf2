"""The Backend protocol checked statically: mypy must accept both backends as Backends and reject
a class missing a member (the control), so the check cannot pass by reading nothing."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFORM = ROOT / "tests" / "typing" / "backends_conform.py"
#: third-party packages (torch, ray, ...) are not followed: the check is about our classes' members
CONFIG = """[mypy]
follow_imports = skip
ignore_missing_imports = True
[mypy-selfensemble.*]
follow_imports = silent
"""

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                                reason="mypy is not installed (pip install -e '.[dev]')")


def mypy(tmp_path: Path, *files: Path) -> subprocess.CompletedProcess:
    config = tmp_path / "mypy.ini"
    config.write_text(CONFIG)
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir",
                           str(tmp_path / "cache"), *map(str, files)], capture_output=True, text=True,
                          env={"MYPYPATH": str(ROOT / "src"), "PATH": ""}, timeout=300)


def test_both_backends_are_backends_to_mypy(tmp_path):
    done = mypy(tmp_path, CONFORM)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_backend_missing_a_member_is_rejected(tmp_path):
    control = tmp_path / "missing_close.py"
    source = CONFORM.read_text().replace("from selfensemble.pipeline.backends.ray import RayBackend\n", "")
    source = source.split("\n\ndef ray_is_a_backend")[0] + '''

class NoClose(LocalBackend):
    close = None  # type: ignore[assignment]


def no_close(backend: NoClose) -> Backend:
    return backend
'''
    control.write_text(source)
    done = mypy(tmp_path, control)
    assert done.returncode == 1 and "close" in done.stdout, done.stdout + done.stderr
