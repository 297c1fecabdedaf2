"""The Ray backend: one pool of actors, each holding one Engine, answers every pass of a run.

The pool (``ray_pool.ActorPool``) lives as long as the backend: its actors build the Engine once
from the driver's LoadSpec and EngineConfig (``engine_factory.build_engine``) on the first pass
that has work for them, then serve every pass: each method, each sampled-confidence pass of a
weighted method, each paraphrase-writing round. A run whose items are all stored starts no actor.

Shape of one ``answer_many`` / ``sample`` call (one pass over the items a run still needs):

  driver: queries cut into engine batches (``config.batch_size``); each actor gets up to two
  actors: ``Engine.answer_many`` (or ``Engine.sample``) on a batch — the local backend's own code
  driver: ``ray.wait`` as batches finish → ``on_done(index, Answer)`` (the run store's append),
          and the freed actor's next batch

The driver is the only writer of the run folder, so a killed driver loses nothing written and
the same command resumes; a killed actor is restarted by Ray (``max_restarts=-1``) and the
batches it held are retried (``max_task_retries=-1``: a batch that kills its actor every time is
retried until the run is stopped). Ray's own checkpointing is not used; the run store already
skips finished items before anything is sent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from selfensemble.errors import SelfEnsembleError
from selfensemble.pipeline.backends.ray_pool import (
    CRASH_ONCE_ENV,
    ActorPool,
    BatchResult,
    EngineWorker,
    Pool,
    batches,
)

__all__ = ["CRASH_ONCE_ENV", "EngineWorker", "RayBackend", "connect", "import_ray"]

INSTALL_HINT = "pip install 'selfensemble[ray]'"
CONNECT_TIMEOUT_S = 5.0


def import_ray():
    """``ray``, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise SelfEnsembleError(f"--backend ray needs Ray, which is not installed: {INSTALL_HINT}") from err
    return ray


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast on a cluster address nothing listens on (``ray.init`` would wait for minutes).

    ``address`` is ``HOST:PORT`` or ``ray://HOST:PORT``; a plain TCP connect must succeed within
    ``timeout`` seconds.
    """
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SelfEnsembleError(f"--ray-address must be 'auto' or HOST:PORT (e.g. 10.0.0.5:6379), got {address!r}.")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise SelfEnsembleError(
            f"cannot reach a Ray cluster at {address} ({err.strerror or type(err).__name__}); start one with "
            f"`ray start --head --port={port}` on that machine, or drop --ray-address for a local Ray instance."
        ) from None


def _resolve(address: str) -> str:
    """'auto' → the HOST:PORT of the cluster this machine joined, or a clear error when none."""
    if address != "auto":
        return address
    try:
        from ray._private.services import canonicalize_bootstrap_address
        found = canonicalize_bootstrap_address("auto")
    except Exception as err:  # a private helper; its failure means the same as finding nothing
        raise SelfEnsembleError(f"--ray-address auto: no running Ray cluster found on this machine ({err}); "
                                "start one with `ray start --head`, or drop --ray-address.") from None
    if not found:
        raise SelfEnsembleError("--ray-address auto: no running Ray cluster found on this machine; start one "
                                "with `ray start --head`, or drop --ray-address for a local Ray instance.")
    return found


def code_env() -> dict:
    """Ship this process's selfensemble package to every worker (Ray's ``py_modules``).

    The actors then run exactly the driver's code, whatever selfensemble (if any) the cluster's
    nodes have installed; its dependencies (torch, transformers, ...) must be installed there.
    """
    import selfensemble

    return {"py_modules": [os.path.dirname(selfensemble.__file__)], "excludes": ["__pycache__/", "*.pyc"]}


#: What a quiet run (the default) turns off, each brought back by ``verbose``: Ray's C++ core-worker
#: log lines on the driver's stderr, set through the environment before the instance starts (its
#: processes read it then; a value the user set wins).
QUIET_ENV = {"RAY_BACKEND_LOG_LEVEL": "fatal"}
#: Python loggers quieted to ERROR: Ray core (token-authentication notes, start-up info).
QUIET_LOGGERS = ("ray", "ray._private.authentication")


def connect(ray, address: str | None, verbose: bool = False) -> bool:
    """Start a local Ray instance (no address) or join a cluster; True when this call connected.

    Quiet unless ``verbose``: actors' stdout/stderr stay in Ray's log files (``log_to_driver``),
    Ray's own Python loggers show errors only, and the C++ core worker logs only fatal errors
    (QUIET_ENV). Real failures still reach the user: an actor's exception comes back with its
    batch and is raised as one line (`_user_error`).
    """
    if ray.is_initialized():
        return False
    level = logging.WARNING if verbose else logging.ERROR
    kwargs = dict(logging_level=level, log_to_driver=verbose, runtime_env=code_env())
    for name in QUIET_LOGGERS:  # some warn before init() applies logging_level (token auth)
        logging.getLogger(name).setLevel(level)
    with _quiet_env(not verbose):
        if address is None:  # "local": always a fresh instance (a bare init() joins any cluster it finds, dead ones too)
            ray.init(address="local", include_dashboard=False, **kwargs)
            return True
        resolved = _resolve(address)
        check_reachable(resolved)
        try:
            ray.init(address=resolved, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise SelfEnsembleError(f"could not join the Ray cluster at {resolved}: {str(err).splitlines()[0]} (a "
                                    "cluster with token authentication needs RAY_AUTH_MODE=token and its token on "
                                    "this machine)") from None
    return True


@contextlib.contextmanager
def _quiet_env(quiet: bool):
    """QUIET_ENV in os.environ while Ray starts (its processes inherit it), then as it was."""
    added = {k: v for k, v in QUIET_ENV.items() if quiet and k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def cluster_summary(ray) -> dict:
    """CPUs, GPUs, memory (GiB) and live nodes of the cluster, for the manifest and resource checks."""
    res = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"CPU": res.get("CPU", 0.0), "GPU": res.get("GPU", 0.0),
            "memory_gib": round(res.get("memory", 0.0) / 2**30, 2), "nodes": len(nodes)}


def check_resources(cluster: dict, opts) -> None:
    """Refuse a pool the cluster cannot hold (Ray would wait for it forever)."""
    for what, per, flag in (("CPU", opts.cpus_per_worker, "--cpus-per-worker"),
                            ("GPU", opts.gpus_per_worker, "--gpus-per-worker")):
        need = opts.workers * per
        if need > cluster[what] + 1e-9:
            raise SelfEnsembleError(f"{opts.workers} workers × {per:g} {what} ({flag}) need {need:g} {what}s, but "
                                    f"the Ray cluster has {cluster[what]:g}; use fewer --workers or add nodes.")


class RayBackend:
    """The Backend protocol (backends/base.py): ``answer_many`` and ``sample`` run on one actor pool.

    ``spec`` and ``config`` (config.load.LoadSpec, config.engine.EngineConfig) go to every actor as
    they are; ``opts`` is the BackendConfig (pool shape, cluster address). The constructor connects
    to Ray and makes the pool; ``over_pool`` wraps a pool made elsewhere.
    """

    #: no discarded warm-up batch: it would warm (and load the model in) one actor of the pool only
    warm_up = False

    def __init__(self, spec, config, opts, console):
        if opts.gpus_per_worker > 0 and spec.device == "cpu":
            raise SelfEnsembleError("--gpus-per-worker needs --device cuda (or auto): the actors would hold a GPU "
                                    "and compute on the CPU.")
        self.ray = import_ray()
        self._owns_connection = connect(self.ray, opts.address, verbose=opts.verbose)
        try:
            cluster = cluster_summary(self.ray)
            check_resources(cluster, opts)
        except BaseException:
            self.close()
            raise
        # no actor yet: the first pass with work starts them
        self._start(spec, config, opts, ActorPool(self.ray, spec, config, opts), cluster)
        self.console = console
        where = f"cluster at {opts.address}" if opts.address else "a local Ray instance"
        console.print(f"ray: {opts.workers} workers × ({opts.cpus_per_worker:g} CPU, {opts.gpus_per_worker:g} GPU) "
                      f"on {where} ({self.cluster['nodes']} nodes, {self.cluster['CPU']:g} CPUs, "
                      f"{self.cluster['GPU']:g} GPUs); each worker loads {spec.model} once per run")

    @classmethod
    def over_pool(cls, spec, config, opts, pool: Pool, ray: Any = None, cluster: dict | None = None) -> RayBackend:
        """A backend running its passes on ``pool``, already made (``ray_pool.Pool``: an ``ActorPool`` on
        a connection the caller holds, or a runner of engine batches in this process): nothing is
        connected, checked or printed. ``close`` kills the pool and leaves any connection alone;
        ``ray`` (the module, when there is one) and ``cluster`` (``cluster_summary``) are what
        ``provenance`` reports."""
        backend = cls.__new__(cls)
        backend.ray, backend._owns_connection, backend.console = ray, False, None
        backend._start(spec, config, opts, pool, cluster or {})
        return backend

    def _start(self, spec, config, opts, pool: Pool, cluster: dict) -> None:
        self.spec, self.config, self.opts, self.cluster = spec, config, opts, cluster
        self.pool: Pool = pool
        self.attention_notes: list[str] = []
        self.attention_seen: list[dict] = []  # the actors' attention paths (stable keys), what resume compares
        self.stats: dict[str, int] = {}
        self.compile_count = 0
        self.passes = 0

    @property
    def workers(self) -> int:
        """Actors answering at once (the pool size)."""
        return self.opts.workers

    @property
    def attention_known(self) -> bool:
        """False until an actor has answered (then the run store checks the path, see experiment.py)."""
        return bool(self.attention_notes)

    @property
    def attention_note(self) -> str:
        """The attention path(s) the actors reported (one note unless actors disagreed)."""
        return " | ".join(self.attention_notes) or "unknown (no batch answered yet)"

    @property
    def attention_paths(self) -> dict[str, str]:
        """The actors' attention paths, e.g. {"prefill": "sdpa-dense", "decode": "sdpa-dense"}; a phase
        on which actors disagreed reads 'a | b'."""
        return {phase: " | ".join(dict.fromkeys(p[phase] for p in self.attention_seen)) or "unknown"
                for phase in ("prefill", "decode")}

    def answer_many(self, queries: Sequence, method: str, gen=None,
                    on_done: Callable[[int, Any], None] | None = None) -> list:
        """``Engine.answer_many`` over the actor pool; ``on_done(index, answer)`` as each batch returns."""
        from selfensemble.config.generation import GenerationConfig
        from selfensemble.methods.registry import check_method

        check_method(method)
        return self._run(queries, method, gen or GenerationConfig(), None, on_done)

    def sample(self, queries: Sequence, n_samples: int | Sequence[int], gen=None) -> list:
        """``Engine.sample`` over the actor pool: ``n_samples`` (per query, or one for all) answers per query.

        Each sample draws from its query's own stream (Engine.sample), so which actor and batch a
        query lands in does not change its samples.
        """
        from selfensemble.config.generation import GenerationConfig
        from selfensemble.engine.queries import sample_counts

        counts = sample_counts(n_samples, len(queries))
        return self._run(queries, None, gen or GenerationConfig(), counts, None)

    def _run(self, queries: Sequence, method: str | None, gen, counts: list[int] | None, on_done) -> list:
        """One pass over the pool: answers (``method``) or samples (``counts``, method None) in query order."""
        if not queries:
            return []
        self.passes += 1
        results: list = [None] * len(queries)
        work = batches(len(queries), self.config.batch_size, queries, counts)
        try:
            for out in self.pool.run(work, method, gen):
                self._collect(out, results, on_done)
        except Exception as err:  # a RayTaskError is also an instance of the actor's exception class
            if isinstance(err, SelfEnsembleError) and not hasattr(err, "cause"):
                raise  # our own (on_done's), not from an actor
            raise _user_error(err) from None
        missing = sum(a is None for a in results)
        if missing:
            raise SelfEnsembleError(f"Ray returned {len(queries) - missing} of {len(queries)} answers; rerun to resume.")
        return results

    def _collect(self, out: BatchResult, results: list, on_done) -> None:
        """One finished batch (indices, answers, stats delta) into ``results``, the counters and ``on_done``."""
        indices, answers, delta = out
        delta = dict(delta)
        self.compile_count += delta.pop("compiles", 0)
        for k, v in delta.items():
            self.stats[k] = self.stats.get(k, 0) + v
        for i, answer in zip(indices, answers, strict=True):
            if results[i] is not None:  # a batch answered twice: keep the first, write once
                continue
            results[i] = answer
            for one in answer if isinstance(answer, list) else [answer]:  # a sample pass: n answers
                self._learn_attention(one)
            if on_done:
                on_done(i, answer)

    def _learn_attention(self, answer) -> None:
        if answer.attention_note not in self.attention_notes:
            self.attention_notes.append(answer.attention_note)
        if answer.attention not in self.attention_seen:
            self.attention_seen.append(dict(answer.attention))

    def provenance(self) -> dict:
        """Manifest fields: backend, pool shape, the cluster's resources, Ray version.

        ``ray_passes``: passes run so far (answer_many / sample calls with work); ``ray_actor_starts``:
        actors created so far (each loaded the model once; Ray's restarts of a crashed one not counted).
        """
        return {"backend": "ray", "workers": self.opts.workers, "gpus_per_worker": self.opts.gpus_per_worker,
                "cpus_per_worker": self.opts.cpus_per_worker, "ray_address": self.opts.address,
                "cluster_resources": self.cluster, "ray_version": getattr(self.ray, "__version__", None),
                "ray_passes": self.passes,
                "ray_actor_starts": self.pool.starts}

    def close(self) -> None:
        """Kill the pool's actors, then disconnect (and stop the local instance) if this backend connected."""
        pool = getattr(self, "pool", None)  # none yet when the constructor failed
        if pool is not None and (self.ray is None or self.ray.is_initialized()):
            pool.kill()
        if self._owns_connection and self.ray.is_initialized():
            self.ray.shutdown()
        self._owns_connection = False


def _user_error(err: BaseException) -> SelfEnsembleError:
    """A failure inside Ray as one line: our own errors keep their message, others name their type."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        cause = getattr(cur, "cause", None)  # RayTaskError keeps the worker's own exception here
        if isinstance(cause, SelfEnsembleError):
            return SelfEnsembleError(str(cause))
        if isinstance(cur, SelfEnsembleError) and not hasattr(cur, "cause"):
            return cur
        cur = cause if isinstance(cause, BaseException) else (cur.__cause__ or cur.__context__)
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return SelfEnsembleError(f"the Ray run failed: {type(err).__name__}: {first} "
                             "(results written so far are kept; rerun the same command to resume)")
