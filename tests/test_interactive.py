"""`selfensemble interactive` with no input says nothing ran (it used to say "rerun to resume")."""

from __future__ import annotations

import io
import sys

import pytest


@pytest.mark.parametrize("given", ["", "run\nsmollm2-135m\n"])
def test_end_of_input_before_the_choices_says_nothing_ran(given, monkeypatch, capsys):
    from selfensemble.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO(given))
    with pytest.raises(SystemExit) as stop:
        main(["interactive"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "nothing ran" in err and "resume" not in err
