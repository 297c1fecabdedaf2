"""Measuring one call: wall time (CUDA-synchronised), dynamo compiles, peak memory; and the environment.

This is the small part any timing script needs; it knows nothing about methods or targets.
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from selfensemble.engine.models import LoadedModel


class PeakRss:
    """Peak resident memory (MB) over a block, sampled by a background thread every few ms.

    The OS keeps only a lifetime peak (ru_maxrss), which cannot tell one benchmark row from another.
    """

    def __init__(self, interval: float = 0.005):
        import psutil

        self._proc, self._interval = psutil.Process(), interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRss:
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def mb(self) -> float:
        return self.peak / 2**20


@dataclass
class Timed:
    """Wall time of one call, with the dynamo compiles and peak memory it caused."""

    seconds: float
    compiles: int
    peak_rss_mb: float
    cuda_peak_mb: float | None
    value: Any = None


def timed(fn: Callable[[], Any], device: Any) -> Timed:
    """Run ``fn`` once; CUDA is synchronised on both sides so the wall time is the device's too."""
    import torch

    from selfensemble.engine.attention.dispatch import compile_count

    cuda = getattr(device, "type", str(device)) == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    c0 = compile_count()
    with PeakRss() as rss:
        t0 = time.perf_counter()
        value = fn()
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    cuda_mb = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return Timed(seconds, compile_count() - c0, rss.mb, cuda_mb, value)


#: Tensor methods that copy a value to the host (on a GPU each waits for the device's queue to drain)
SYNC_METHODS = ("tolist", "item", "__bool__", "__int__", "__float__")


@contextlib.contextmanager
def count_host_syncs():
    """Count calls of ``SYNC_METHODS`` on any tensor inside the block; yields a one-key dict ``{"syncs": n}``.

    Counted by wrapping the methods, so it sees CPU tensors too (where a "sync" is free): the
    number is what a GPU would wait on. Wrapping slows the block down; do not time it.
    """
    import torch

    counter = {"syncs": 0}
    saved = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}

    def wrap(fn):
        def counted(self, *args, **kwargs):
            counter["syncs"] += 1
            return fn(self, *args, **kwargs)
        return counted

    for name, fn in saved.items():
        setattr(torch.Tensor, name, wrap(fn))
    try:
        yield counter
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def _git_commit() -> tuple[str | None, bool | None]:
    """The source commit (provenance.source: git HEAD, or "sha256:<hash>" of the installed files) and
    whether the checkout has local changes (None without git)."""
    from selfensemble.store.provenance import source

    src = source()
    return (src["commit"], src["dirty"]) if "commit" in src else (f"sha256:{src['sha256']}", None)


def environment(lm: LoadedModel) -> dict:
    import torch
    import transformers

    commit, dirty = _git_commit()
    cuda = lm.device.type == "cuda"
    return {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "platform": platform.platform(), "device": str(lm.device),
        "device_name": torch.cuda.get_device_name(lm.device) if cuda else (platform.processor() or "cpu"),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "model": lm.spec, "dtype": str(lm.dtype).replace("torch.", ""),
        "parameters": sum(p.numel() for p in lm.model.parameters()),
        "git_commit": commit, "git_dirty": dirty,
    }
