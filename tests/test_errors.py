"""Errors a library user can act on: the library names the Python argument, the CLI its flag."""

from __future__ import annotations

import pytest

from selfensemble.cli import as_flags, main
from selfensemble.config.run import RunConfig
from selfensemble.errors import ConfigError, SelfEnsembleError
from selfensemble.pipeline.experiment import run_experiment


def test_the_library_names_the_argument(tmp_path):
    with pytest.raises(ConfigError) as err:
        run_experiment(RunConfig(dataset="jsonl", num_paraphrases=0, out=str(tmp_path / "run")))
    assert str(err.value).startswith("num_paraphrases must be >= 1") and "--" not in str(err.value)
    assert err.value.arguments == ("num_paraphrases",)


def test_the_cli_names_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["run", "--prompt-indices", "0,7", "--limit", "2", "--out", str(tmp_path / "run")])
    assert done.value.code == 2
    err = capsys.readouterr().err  # refused before the model loads, so this costs no load
    assert "error: --prompt-indices [7] out of range: --num-paraphrases 5 gives prompts 0 to 4." in err
    assert "Traceback" not in err


@pytest.mark.parametrize("message, arguments, shown", [
    ("prompt_indices [3] out of range: num_paraphrases 2 gives prompts 0 to 1.", ("prompt_indices", "num_paraphrases"),
     "--prompt-indices [3] out of range: --num-paraphrases 2 gives prompts 0 to 1."),
    ("This tokenizer has no chat_template; drop chat to use the Q:/A: format.", ("chat",),
     "This tokenizer has no chat_template; drop --chat to use the Q:/A: format."),  # a longer name is kept
    ("compile: compiling failed; run without compile.", ("compile",), "--compile: compiling failed; run without --compile."),
    ("ray address 'x' is not HOST:PORT", ("address",), "ray --ray-address 'x' is not HOST:PORT"),
    ("workers must be >= 1", (), "workers must be >= 1"),  # names nothing: left as it is
])
def test_arguments_become_flags_and_nothing_else_changes(message, arguments, shown):
    assert as_flags(SelfEnsembleError(message, arguments=arguments)) == shown
