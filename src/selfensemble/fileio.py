"""Where selfensemble keeps its files, and how it writes them so readers never see half a file.

Imports nothing from selfensemble (like ``errors``), so every layer may use it:

* :func:`cache_dir` — the user cache: ``$SELFENSEMBLE_CACHE``, else ``~/.cache/selfensemble``
  (paraphrases, confidence, assembled and de-quantised models live under it).
* :func:`atomic_write_text` — write a temp file beside the target, fsync, rename over it.
* :func:`new_temp_file` / :func:`new_temp_dir` — created with the permissions the user's umask
  gives any other file (``tempfile.mkstemp``/``mkdtemp`` make them 0600/0700 whatever the umask,
  and a rename keeps that mode, so run folders and caches used to come out private).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def cache_dir() -> Path:
    """The user cache folder: $SELFENSEMBLE_CACHE, else ~/.cache/selfensemble (not created here)."""
    return Path(os.environ.get("SELFENSEMBLE_CACHE", Path.home() / ".cache" / "selfensemble")).expanduser()


def new_temp_file(directory: Path, prefix: str, suffix: str = ".tmp") -> tuple[int, Path]:
    """(fd, path) of a new empty file in ``directory``, mode 0666 less the umask (0644 under umask 022).

    O_EXCL with a random name, as ``mkstemp`` does, but the kernel applies the umask.
    """
    for _ in range(100):
        path = Path(directory) / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {directory}")  # pragma: no cover


def new_temp_dir(directory: Path, prefix: str) -> Path:
    """A new empty folder in ``directory``, mode 0777 less the umask (0755 under umask 022)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        path = Path(directory) / f"{prefix}{secrets.token_hex(6)}"
        try:
            path.mkdir(0o777)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary folder in {directory}")  # pragma: no cover


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) so readers see the old file or the new one, never a half-written one."""
    path = Path(path)
    fd, tmp = new_temp_file(path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename durable; not possible on every platform, so best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
