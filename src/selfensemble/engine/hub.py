"""Fail fast, before transformers' retries, on a hub id that cannot load here.

A mistyped ``--model`` on a machine without internet used to spend ~50 s in hub retries before
its error. ``check_hub_spec`` answers in a few seconds at most: a spec that is not a hub id
(the embedded model, ``random:<arch>``, a local folder or ``.gguf``) or a hub id with a copy in
the local hub cache goes on to load as before; any other hub id needs the hub, so with
``HF_HUB_OFFLINE`` set, or when a short connection probe to the hub fails, it is refused at once
with the list of specs that load without a network.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from selfensemble.errors import SelfEnsembleError

PROBE_SECONDS = 3.0  # a reachable hub answers a TCP connect in well under a second


def is_hub_id(spec: str) -> bool:
    """'org/name' or 'name' that is no local path, no .gguf, not random:<arch>, not the embedded model."""
    from selfensemble.engine.model_specs import PACKAGED_GGUF_SPECS

    if spec in PACKAGED_GGUF_SPECS or spec.startswith("random:") or spec.endswith(".gguf"):
        return False
    return not spec.startswith((".", "/", "~")) and not Path(spec).exists()


def _offline_flag() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _in_local_cache(spec: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False
    try:
        found = try_to_load_from_cache(spec, "config.json", revision=revision)
    except (ValueError, OSError):  # not a valid repo id at all
        return False
    return isinstance(found, str)


def hub_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """A TCP connection to the hub endpoint (HF_ENDPOINT, default huggingface.co:443) within ``timeout`` s;
    run in a thread so a slow name lookup cannot hold the caller longer than that."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def check_hub_spec(spec: str, revision: str | None = None) -> None:
    """Raise SelfEnsembleError at once when ``spec`` is a hub id that is not cached and the hub is out of reach."""
    if not is_hub_id(spec) or _in_local_cache(spec, revision):
        return
    if _offline_flag():
        why = "HF_HUB_OFFLINE is set"
    elif not hub_reachable():
        why = "the hub cannot be reached from this machine"
    else:
        return
    from selfensemble.config.defaults import DEFAULT_MODEL
    from selfensemble.engine.model_specs import GEMMA3_SPEC, RANDOM_CONFIGS

    raise SelfEnsembleError(
        f"Model {spec!r} is not a local folder or file and not in the local hub cache, and {why}. "
        f"Specs that load without a network: {DEFAULT_MODEL} (embedded), {GEMMA3_SPEC} (extra gemma3), random:<{'|'.join(RANDOM_CONFIGS)}>, "
        "a local model folder, or a .gguf path.")
