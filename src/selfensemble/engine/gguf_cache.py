"""De-quantised GGUF weights, cached once as a transformers folder, so later loads take seconds.

transformers de-quantises a GGUF (Q4_1, Q4_K_M, …) tensor by tensor on every
``from_pretrained(gguf_file=…)``, and parses the file's metadata for the tokenizer: 25–55 s for the
embedded 135M model on a 2-core CPU, every command. The first load saves what it built — the
weights as ``model.safetensors``, ``config.json``, ``generation_config.json`` and the tokenizer
files (``save_pretrained``) — and every later load reads that folder instead (~1.5 s).

Where: ``<root>/<gguf stem>-<dtype>-<key>/``; ``<root>`` is $SELFENSEMBLE_MODEL_CACHE when it names
a folder, else ``<user cache>/models/dequantized`` (fileio.cache_dir: $SELFENSEMBLE_CACHE or
~/.cache/selfensemble). ``SELFENSEMBLE_MODEL_CACHE=off`` turns the cache off (every load converts).

Key: the GGUF's content (SHA-256; ``gguf-sha256.json`` remembers it per path, size and mtime, so a
file is hashed once), the dtype, and the transformers and gguf versions that de-quantised it (a new
converter builds a new entry rather than serving the old one's output).

Written safely: into a fresh folder beside the entry, then renamed into place, so an entry is
whole or absent. A process that finds no entry converts under ``<entry>.lock`` (fcntl): a second
one meanwhile waits, then reads the first's entry; were a rename to race anyway, the first wins
and the second drops its copy. ``entry.json``, written last, lists every file with its size and SHA-256;
each load checks them. An entry with a file missing or of the wrong size is clearly incomplete: it
is reported with its path and rebuilt. An entry whose files are all there but whose content does
not match (or does not load) is refused with its path, never used and never silently replaced.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from selfensemble.errors import ModelError
from selfensemble.fileio import atomic_write_text, cache_dir, fsync_dir, new_temp_dir, new_temp_file

if TYPE_CHECKING:  # importing this module loads no torch (`selfensemble info` reads the cache's folder)
    import torch

ENV = "SELFENSEMBLE_MODEL_CACHE"
OFF = ("0", "off", "false", "no", "none")
ENTRY_FILE = "entry.json"
INDEX_FILE = "gguf-sha256.json"
FORMAT = 1  # bump when the entry layout changes: old entries are then never read

#: GGUF de-quantisations this process ran (a cached load adds nothing; tests count them).
conversions = 0


def enabled() -> bool:
    """False when $SELFENSEMBLE_MODEL_CACHE says off (0, off, false, no, none)."""
    return os.environ.get(ENV, "").strip().lower() not in OFF


def cache_root() -> Path:
    """The folder of the entries: $SELFENSEMBLE_MODEL_CACHE when it names one, else
    <user cache>/models/dequantized (fileio.cache_dir: $SELFENSEMBLE_CACHE or ~/.cache/selfensemble)."""
    value = os.environ.get(ENV, "").strip()
    if value and value.lower() not in OFF:
        return Path(value).expanduser()
    return cache_dir() / "models" / "dequantized"


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def gguf_sha256(path: Path) -> str:
    """SHA-256 of the GGUF's content, hashed once per (path, size, mtime) and remembered in the index."""
    path = Path(path).resolve()
    st = path.stat()
    index_path = cache_root() / INDEX_FILE
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}  # absent or unreadable: only costs a re-hash (the index holds no weights)
    known = index.get(str(path)) if isinstance(index, dict) else None
    if isinstance(known, dict) and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns:
        return str(known["sha256"])
    digest = _sha256(path)
    index = index if isinstance(index, dict) else {}
    index[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    try:
        index_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(index_path, json.dumps(index, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass  # a read-only cache still works: the file is hashed again next time
    return digest


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("transformers", "gguf"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def entry_dir(gguf: Path, dtype: torch.dtype) -> Path:
    """The cache folder of ``gguf`` de-quantised to ``dtype``, e.g.
    ``…/dequantized/SmolLM2-135M-Instruct.Q4_1-float32-1c9e0f3a5b7d2e48``."""
    dtype_name = str(dtype).removeprefix("torch.")
    key = json.dumps([FORMAT, gguf_sha256(gguf), dtype_name, _versions()], sort_keys=True)
    return cache_root() / f"{Path(gguf).stem}-{dtype_name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def entries() -> list[dict]:
    """The whole entries in the cache folder: {"path", "gguf", "bytes"} each (for `selfensemble info`)."""
    root = cache_root()
    found = []
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        try:
            record = json.loads((entry / ENTRY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found.append({"path": str(entry), "gguf": record.get("gguf", {}).get("path"),
                      "bytes": sum(f.get("size", 0) for f in record.get("files", {}).values())})
    return found


def check_entry(entry: Path, verify: bool = True) -> str | None:
    """None when ``entry`` is whole; else why it is clearly incomplete (a file missing or cut short).

    Raises ModelError when every file is there at its size but a content hash differs (``verify``):
    that is damage, not an unfinished write, so the entry is refused rather than rebuilt.
    """
    try:
        listed = json.loads((entry / ENTRY_FILE).read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return f"{ENTRY_FILE} is missing"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{ENTRY_FILE} is unreadable ({err})"
    for name, info in listed.items():
        file = entry / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != info["size"]:
            return f"{name} has {file.stat().st_size} bytes, {info['size']} expected"
    if verify:
        for name, info in listed.items():
            if _sha256(entry / name) != info["sha256"]:
                raise ModelError(
                    f"The cached model {entry} is damaged: {name} does not match its recorded SHA-256. "
                    f"Delete that folder (it is rebuilt from the GGUF on the next load), or set {ENV}=off.")
    return None


def _save(entry: Path, model: torch.nn.Module, tokenizer, gguf: Path, digest: str) -> None:
    """Write the entry beside its final place, then rename it in (a crash leaves no partial entry)."""
    tmp = new_temp_dir(entry.parent, prefix=f".{entry.name}.")
    try:
        quantizer = getattr(model, "hf_quantizer", None)
        qconfig = getattr(model.config, "quantization_config", None)
        # the weights are de-quantised already; transformers refuses to save while the GGUF
        # "quantizer" is attached, so detach it for the save and put it back for this process
        model.hf_quantizer = None
        if qconfig is not None:
            del model.config.quantization_config
        try:
            model.save_pretrained(tmp)
        finally:
            model.hf_quantizer = quantizer
            if qconfig is not None:
                model.config.quantization_config = qconfig
        tokenizer.save_pretrained(tmp)
        mode = _file_mode(tmp)
        files = {}
        for file in sorted(p for p in tmp.iterdir() if p.is_file()):
            os.chmod(file, mode)  # transformers writes the weights 0600 whatever the umask
            files[file.name] = {"size": file.stat().st_size, "sha256": _sha256(file)}
        record = {"format": FORMAT, "gguf": {"path": str(gguf), "sha256": digest}, "files": files,
                  "versions": _versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_text(tmp / ENTRY_FILE, json.dumps(record, indent=2) + "\n")
        try:
            os.rename(tmp, entry)
        except OSError:
            if check_entry(entry, verify=False) is not None:  # not another process's whole entry
                raise
        fsync_dir(entry.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _file_mode(directory: Path) -> int:
    """The mode a new file gets under the user's umask (read from a probe file: no umask race)."""
    fd, probe = new_temp_file(directory, prefix=".mode-")
    os.close(fd)
    try:
        return probe.stat().st_mode & 0o777
    finally:
        probe.unlink()


def _load_entry(entry: Path, dtype: torch.dtype, kwargs: dict, verify: bool = False):
    """The entry's model and tokenizer (``verify``: check its hashes first; check_entry raises)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if verify:
        check_entry(entry)

    try:
        tokenizer = AutoTokenizer.from_pretrained(entry)
        model = AutoModelForCausalLM.from_pretrained(entry, dtype=dtype, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise ModelError(f"The cached model {entry} does not load ({str(err).splitlines()[0]}). Delete that "
                         f"folder (it is rebuilt from the GGUF on the next load), or set {ENV}=off.") from err
    return model, tokenizer


def load_gguf(gguf: Path, dtype: torch.dtype, convert: Callable[[], tuple], **kwargs):
    """(model, tokenizer) of ``gguf`` in ``dtype``: from the cache when it holds them, else from
    ``convert()`` (transformers' own GGUF load), then saved for next time.

    ``kwargs`` go to ``from_pretrained`` of a cached entry (``device_map``). A model whose weights
    transformers kept packed (its GGUF kernels) is not cached: there is nothing de-quantised to keep.
    """
    global conversions
    if not enabled():
        conversions += 1
        return convert()
    entry = entry_dir(gguf, dtype)
    if entry.exists() and check_entry(entry, verify=False) is None:
        return _load_entry(entry, dtype, kwargs, verify=True)
    with _converting(entry):  # a second process waits here for the first's entry instead of converting too
        if entry.exists():
            why = check_entry(entry)
            if why is None:
                return _load_entry(entry, dtype, kwargs)
            warnings.warn(f"the cached model {entry} is incomplete ({why}); rebuilding it from {gguf}", stacklevel=2)
            shutil.rmtree(entry, ignore_errors=True)
        conversions += 1
        model, tokenizer = convert()
        _keep(entry, model, tokenizer, gguf)
    return model, tokenizer


@contextmanager
def _converting(entry: Path) -> Iterator[None]:
    """Hold ``<entry>.lock`` (fcntl, released by the OS if the process dies) while converting; in a
    folder that cannot be written, convert unlocked (saving then fails with a warning, loading works)."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fh = open(entry.with_name(entry.name + ".lock"), "a")  # noqa: SIM115 - closed below
    except OSError:
        yield
        return
    with fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _keep(entry: Path, model, tokenizer, gguf: Path) -> None:
    """Save a fresh conversion as ``entry``; a failure to write only costs the next load a conversion."""
    if getattr(getattr(model, "hf_quantizer", None), "packed_modules", None):
        return  # transformers kept the GGUF blocks packed: there are no de-quantised weights to keep
    try:
        _save(entry, model, tokenizer, gguf, gguf_sha256(gguf))
    except OSError as err:
        warnings.warn(f"could not cache the de-quantised model in {entry} ({err}); the next load converts "
                      f"{gguf.name} again", stacklevel=3)
