"""jsoncache: appends per batch, folds the journal on open, cuts a killed writer's unfinished line,
refuses (never silently replaces) a corrupt file."""

from __future__ import annotations

import json

import pytest

from selfensemble.errors import SelfEnsembleError
from selfensemble.store import jsoncache


def test_appends_are_read_back_and_folded_into_the_object(tmp_path):
    path = tmp_path / "c.json"
    assert jsoncache.read(path, "test") == {}
    jsoncache.merge(path, {"a": 1, "b": [2]}, "test")
    jsoncache.merge(path, {"b": [3], "c": {"d": 4}}, "test")
    assert not path.exists() and jsoncache.journal_path(path).read_text().count("\n") == 4
    assert jsoncache.read(path, "test") == {"a": 1, "b": [3], "c": {"d": 4}}
    assert json.loads(path.read_text()) == {"a": 1, "b": [3], "c": {"d": 4}}
    assert jsoncache.journal_path(path).read_text() == ""  # folded: the journal starts over


def test_an_unfinished_last_line_is_cut_off_by_the_next_writer(tmp_path):
    path = tmp_path / "c.json"
    jsoncache.merge(path, {"a": 1}, "test")
    with jsoncache.journal_path(path).open("a") as fh:
        fh.write('["b", {"half": ')  # a writer killed mid-append
    assert jsoncache.read(path, "test") == {"a": 1}
    jsoncache.merge(path, {"c": 3}, "test")
    assert jsoncache.read(path, "test") == {"a": 1, "c": 3}


@pytest.mark.parametrize("where, text, why", [
    ("object", "{broken", "not valid JSON"),
    ("object", "[1, 2]", "not an object"),
    ("journal", '["a", 1]\nnonsense\n["b", 2]\n', "corrupt at line 2"),
])
def test_a_corrupt_file_is_refused_with_its_path_and_kept(tmp_path, where, text, why):
    path = tmp_path / "c.json"
    target = path if where == "object" else jsoncache.journal_path(path)
    target.write_text(text)
    with pytest.raises(SelfEnsembleError, match=f"{target}.*{why}.*delete it"):
        jsoncache.read(path, "test")
    assert target.read_text() == text
