"""What produced a run's answers, and whether a resumed run may add to them.

A run folder records the library versions, the source it ran (git commit, or a hash of the
installed files) and the attention paths its answers came from, as stable keys per phase —
``{"prefill": "flex-compiled", "decode": "sdpa-dense"}`` (``ATTENTION_KEYS``, ``DECODE_KEYS``; the
sentence shown to people is kept apart as a note and may be reworded). A folder written before the
phases were named stored one key (or an older sentence) for the prefill; its decode steps all ran
SDPA with a dense mask, eagerly, so it reads as ``{"prefill": <its key>, "decode": "sdpa-dense"}``. A later
session that resumes the run under other versions (torch, transformers, selfensemble) or another
attention key would mix answers of two systems under one manifest, so it is refused; with
``allow_mixed`` it goes ahead and every record it writes carries its own provenance.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from pathlib import Path

from selfensemble.errors import SelfEnsembleError

#: Packages whose version can change an answer; python is recorded but not compared.
VERSIONED_PACKAGES = ("torch", "transformers", "selfensemble")

#: Stable names of the prefill's attention paths (engine.Engine.attention_key).
ATTENTION_KEYS = ("flex-compiled", "flex-eager", "sdpa-dense", "fallback-sdpa")
#: Stable names of the decode step's paths (engine.Engine.decode_key): SDPA over the static step's dense
#: masks, eager or compiled (``--compile``).
DECODE_KEYS = ("sdpa-dense", "sdpa-dense-compiled")
#: What every decode step ran before the decode path was recorded apart.
LEGACY_DECODE = "sdpa-dense"
# the sentences run folders stored before keys existed, by prefix, most specific first
_LEGACY_NOTES = (("sdpa (FALLBACK", "fallback-sdpa"), ("sdpa", "sdpa-dense"), ("flex (compiled", "flex-compiled"),
                 ("flex (eager", "flex-eager"))


def attention_key(path: str | None) -> str | None:
    """The stable key of a stored attention path: keys pass through; a sentence an older run folder
    stored is mapped once (e.g. "sdpa (dense mask; default on CPU, …)" → "sdpa-dense"); a Ray pool's
    "a | b" maps part by part; anything else is returned as it is (compared verbatim)."""
    if path is None or path in ATTENTION_KEYS:
        return path
    if " | " in path:
        return " | ".join(attention_key(p) or p for p in path.split(" | "))
    for prefix, key in _LEGACY_NOTES:
        if path.startswith(prefix):
            return key
    return path


def attention_paths(value: str | dict | None) -> dict[str, str] | None:
    """{"prefill": key, "decode": key} from any stored form: such a dict (its keys normalised), or
    one key / older sentence (the prefill's; decode was then always ``LEGACY_DECODE``); None stays None.

    Example: "sdpa (dense mask; default on CPU, …)" → {"prefill": "sdpa-dense", "decode": "sdpa-dense"}.
    """
    if value is None:
        return None
    if isinstance(value, dict):
        return {"prefill": attention_key(value.get("prefill")) or "unknown",
                "decode": str(value.get("decode") or LEGACY_DECODE)}
    return {"prefill": attention_key(value) or "unknown", "decode": LEGACY_DECODE}


def describe_paths(paths: dict | str | None) -> str:
    """One line for messages: "prefill flex-compiled, decode sdpa-dense"."""
    norm = attention_paths(paths)
    return "unknown" if norm is None else f"prefill {norm['prefill']}, decode {norm['decode']}"


@functools.lru_cache(maxsize=1)
def source() -> dict:
    """Which source produced the answers: {"commit": HEAD, "dirty": bool} when this package is a tracked
    file of a git checkout, else {"sha256": hash of the installed package files} (16 hex digits)."""
    pkg = Path(__file__).resolve().parents[1]  # the selfensemble package folder

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=pkg, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        git("ls-files", "--error-unmatch", "__init__.py")  # tracked here, not an install inside some repo
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".") != ""
        if head:
            return {"commit": head, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        pass
    digest = hashlib.sha256()
    for f in sorted(p for p in pkg.rglob("*") if p.is_file() and p.suffix in (".py", ".html", ".json", ".jsonl")):
        digest.update(str(f.relative_to(pkg)).encode() + b"\0" + f.read_bytes())
    return {"sha256": digest.hexdigest()[:16]}


def package_versions() -> dict[str, str | None]:
    """Versions of python and the libraries that shape answers, read without importing them (torch is slow)."""
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def differences(stored: dict, now: dict) -> dict[str, tuple]:
    """{what: (stored, now)} for compared versions and the attention key; unknown on either side is skipped.

    ``stored`` and ``now`` look like a manifest: {"versions": {...}, "attention_path": paths | None}
    (paths in any form :func:`attention_paths` reads; compared per phase, shown as one line).
    Example: stored torch 2.13.0, now 2.14.0 → {"torch": ("2.13.0", "2.14.0")}.
    """
    diffs: dict[str, tuple] = {}
    old, new = stored.get("versions") or {}, now.get("versions") or {}
    for name in VERSIONED_PACKAGES:
        if old.get(name) is not None and new.get(name) is not None and old[name] != new[name]:
            diffs[name] = (old[name], new[name])
    a, b = attention_paths(stored.get("attention_path")), attention_paths(now.get("attention_path"))
    if a is not None and b is not None and a != b:
        diffs["attention_path"] = (describe_paths(a), describe_paths(b))
    return diffs


def check_resume(path: Path, stored: dict, now: dict, allow_mixed: bool) -> bool:
    """True when this session differs from the stored run and ``allow_mixed`` lets it go on;
    raises SelfEnsembleError when it differs and mixing was not asked for; False when it matches."""
    diffs = differences(stored, now)
    if not diffs:
        return False
    listed = "; ".join(f"{k}: run has {a!r}, now {b!r}" for k, (a, b) in diffs.items())
    if not allow_mixed:
        raise SelfEnsembleError(
            f"{path} was produced under other versions or another attention path ({listed}). Resuming would mix "
            "answers of two systems; use another --out, the original environment, or --allow-mixed to record "
            "each new answer's provenance with it."
        )
    return True
