"""Files the tool writes are as readable as the user's umask allows (they used to be 0600 whatever it was).

The atomic writes went through ``tempfile.mkstemp``, which creates 0600 files, and the rename kept
that mode: run folders and caches shared with a group, or served by a web server, were unreadable.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import pytest

from selfensemble.store import jsoncache
from selfensemble.store.run_store import RunStore, atomic_write_json


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_run_folder_follows_the_umask(tmp_path, mask, mode):
    with umask(mask), RunStore(tmp_path / "run", {"method": "origin"}) as store:
        store.append({"id": "q1", "correct": True})
        store.write_metrics({"n": 1})
    assert modes(tmp_path / "run") == {"manifest.json": mode, "metrics.json": mode, "results.jsonl": mode, ".lock": mode}


def test_a_json_cache_follows_the_umask(tmp_path):
    path = tmp_path / "cache" / "paraphrases.json"
    with umask(0o022):
        jsoncache.merge(path, {"q": {"paraphrases": ["p"]}}, "paraphrase")
        assert jsoncache.read(path, "paraphrase") == {"q": {"paraphrases": ["p"]}}  # folds the journal in
    assert set(modes(path.parent).values()) == {0o644} and path.exists()


def test_atomic_json_follows_the_umask_and_leaves_no_temp_file(tmp_path):
    with umask(0o022):
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert modes(tmp_path) == {"a.json": 0o644}
