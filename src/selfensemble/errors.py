"""Errors the CLI turns into one clear line (no traceback)."""


class SelfEnsembleError(Exception):
    """Bad input or an unsupported setting; the message is meant for the user."""


def did_you_mean(name: str, choices: list[str]) -> str:
    """A ' Did you mean X?' suffix for unknown names, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(name, choices, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""
