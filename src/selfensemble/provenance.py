"""What produced a run's answers, and whether a resumed run may add to them.

A run folder records the library versions and the attention path its answers came from. A later
session that resumes the run under other versions (torch, transformers, selfensemble) or another
attention path would mix answers of two systems under one manifest, so it is refused; with
``allow_mixed`` it goes ahead and every record it writes carries its own provenance.
"""

from __future__ import annotations

import platform
from pathlib import Path

from selfensemble.errors import SelfEnsembleError

#: Packages whose version can change an answer; python is recorded but not compared.
VERSIONED_PACKAGES = ("torch", "transformers", "selfensemble")


def package_versions() -> dict[str, str | None]:
    """Versions of python and the libraries that shape answers, read without importing them (torch is slow)."""
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    if versions.get("selfensemble") is None:
        from selfensemble import __version__

        versions["selfensemble"] = __version__
    return versions


def differences(stored: dict, now: dict) -> dict[str, tuple]:
    """{what: (stored, now)} for compared versions and the attention path; unknown on either side is skipped.

    ``stored`` and ``now`` look like a manifest: {"versions": {...}, "attention_path": str | None}.
    Example: stored torch 2.13.0, now 2.14.0 → {"torch": ("2.13.0", "2.14.0")}.
    """
    diffs: dict[str, tuple] = {}
    old, new = stored.get("versions") or {}, now.get("versions") or {}
    for name in VERSIONED_PACKAGES:
        if old.get(name) is not None and new.get(name) is not None and old[name] != new[name]:
            diffs[name] = (old[name], new[name])
    a, b = stored.get("attention_path"), now.get("attention_path")
    if a is not None and b is not None and a != b:
        diffs["attention_path"] = (a, b)
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
