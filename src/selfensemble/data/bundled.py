"""The small licensed samples shipped inside the package, and when the loaders fall back to them.

`--dataset webqa` and `--dataset pararel` read a data folder when there is one (``--data-path``,
$SELFENSEMBLE_DATA_DIR or a ``shared/data`` folder above the working directory), else (WebQuestions
only) the Hugging Face hub. On a fresh clone offline neither exists, so every example would stop;
instead the loaders read the bundled sample and say so with a `BundledSampleWarning` (the CLI shows
it as one ``warning:`` line) and in ``Dataset.notes`` — never silently.

Samples (attribution and licence next to each):
  samples/webquestions/  200 train + 200 test questions of WebQuestions (CC BY 4.0)
  samples/pararel/       5 relations' templates and 40 facts each from ParaRel (MIT)
"""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"
HUB_TIMEOUT_S = 3.0
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


class BundledSampleWarning(UserWarning):
    """A loader read the bundled sample because the full data set could not be found."""


def sample_path(name: str) -> Path:
    """The bundled sample's folder: ``sample_path("webquestions")`` or ``sample_path("pararel")``."""
    path = SAMPLES_DIR / name
    if not path.is_dir():  # a broken install (package data left out), not a user error
        raise FileNotFoundError(f"bundled sample {name!r} is missing from the installed package: {path}")
    return path


def hub_unreachable(timeout: float = HUB_TIMEOUT_S) -> str | None:
    """Why the Hugging Face hub cannot be used now, or None when it answers.

    One TCP connection with a short timeout, so an offline machine learns it in seconds instead of
    sitting through the `datasets` library's retry loop. The offline switches of huggingface_hub /
    datasets are honoured first; HF_ENDPOINT (a mirror) is the host probed when it is set.
    """
    for name in _OFFLINE_ENV:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name} is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host} cannot be reached ({exc.strerror or type(exc).__name__})"


def bundled_note(dataset: str, n_items: int, why: str) -> str:
    """The one line users see: what was read instead, how many items, how to get the full set."""
    return (f"{dataset}: using the bundled sample: {n_items} items; pass --data-path for the full set "
            f"({why}).")


def announce(note: str) -> None:
    """Warn with `note`, attributed to the loader that fell back (the CLI prints it as one line)."""
    warnings.warn(note, BundledSampleWarning, stacklevel=3)
