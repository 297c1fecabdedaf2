"""The errors a user can act on, as one small hierarchy.

Every error the library raises for a user's mistake or an unsupported setting is a
``SelfEnsembleError``; its subclass says which kind, so a caller can catch one kind::

    SelfEnsembleError        bad input or an unsupported setting (the message is for the user)
      ConfigError            a configuration value or a combination of values
      DataError              a dataset, data file or record that cannot be read as asked
      ModelError             a model that cannot be loaded or run as asked
      ResumeError            a run folder that cannot be resumed with these settings

Library messages name the Python argument (``num_paraphrases``) and list it in ``arguments``;
the CLI names its flags. Bugs
(a broken invariant) stay plain exceptions (``AssertionError``, ``RuntimeError``).
"""

from __future__ import annotations

import difflib


class SelfEnsembleError(Exception):
    """Bad input or an unsupported setting; the message is meant for the user.

    ``arguments``: the Python arguments the message names (``"num_paraphrases"``), so a front end
    can name them its own way (the CLI rewrites them as flags: ``--num-paraphrases``).
    """

    def __init__(self, *args: object, arguments: tuple[str, ...] = ()) -> None:
        super().__init__(*args)
        self.arguments = tuple(arguments)


class ConfigError(SelfEnsembleError, ValueError):
    """A configuration value (or a combination of values) that is not allowed."""


class DataError(SelfEnsembleError):
    """A dataset, data file or stored record that cannot be read as asked."""


class ModelError(SelfEnsembleError):
    """A model that cannot be loaded, or cannot run the way it was asked to."""


class ResumeError(SelfEnsembleError):
    """A run folder whose stored settings or records do not match this run."""


def did_you_mean(name: str, choices: list[str]) -> str:
    """A ' Did you mean X?' suffix for unknown names, or '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""
