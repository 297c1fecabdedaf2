"""Command-line interface: the only place typer is imported; each command group in its own module.

Commands are thin: they parse options into the library's config objects and call the library.
Heavy imports (torch, transformers) happen inside the commands, so `--help` stays fast.
"""

from __future__ import annotations

import os
import re
import sys
import warnings

import typer

from selfensemble.cli.common import app
from selfensemble.errors import SelfEnsembleError

__all__ = ["app", "main"]


def _register_commands() -> None:
    """Importing a command module registers its commands on ``app``."""
    import selfensemble.cli.paraphrase  # noqa: F401
    from selfensemble.cli import ask, bench, demo, info, lm_eval, plan, report, run, serve, tune  # noqa: F401


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 (warnings' signature)
    """The library's own warnings (bundled sample, flex fallback, …) as one `warning:` line on stderr;
    other packages' warnings keep Python's format (file and line help there)."""
    if f"{os.sep}selfensemble{os.sep}" in str(filename):
        return f"warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


_python_format_warning = warnings.formatwarning


#: Python arguments whose flag is not ``--`` + the name with dashes.
FLAG_NAMES = {"address": "--ray-address"}


def as_flags(err: SelfEnsembleError) -> str:
    """The message with each Python argument it names (``err.arguments``) written as its flag:
    "num_paraphrases must be >= 1" → "--num-paraphrases must be >= 1"."""
    text = str(err)
    for name in getattr(err, "arguments", ()):
        flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        text = re.sub(rf"(?<![\w-]){re.escape(name)}\b", flag, text)
    return text


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr, never a traceback (``argv``: the
    arguments after the program name; None reads sys.argv)."""
    _register_commands()
    warnings.formatwarning = _format_warning
    debug = os.environ.get("SELFENSEMBLE_DEBUG") == "1"
    try:
        app(args=argv, standalone_mode=False)
    except SelfEnsembleError as err:
        if debug:
            raise
        typer.echo(f"error: {as_flags(err)}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted (results written so far are kept; rerun to resume)", err=True)
        sys.exit(130)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except Exception as err:  # the CLI framework's usage errors, and anything unexpected
        if hasattr(err, "show") and hasattr(err, "exit_code"):  # click's / typer's own ClickException
            err.show()
            sys.exit(err.exit_code)
        if debug:
            raise
        typer.echo(f"internal error: {type(err).__name__}: {err} (set SELFENSEMBLE_DEBUG=1 for a traceback)",
                   err=True)
        sys.exit(1)
