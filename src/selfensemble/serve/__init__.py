"""`selfensemble serve`: an HTTP API (FastAPI) and a comparison page around one loaded Engine.

Needs the optional extra ``pip install 'selfensemble[serve]'`` (fastapi, uvicorn); importing this
package without it raises a SelfEnsembleError that names the pip command.
"""

from __future__ import annotations

from selfensemble.errors import SelfEnsembleError

try:
    import fastapi
    import uvicorn
except ImportError as err:  # pragma: no cover - exercised only where the extra is missing
    raise SelfEnsembleError(
        f"selfensemble serve needs the optional extra: pip install 'selfensemble[serve]' ({err.name} is missing)."
    ) from err

from selfensemble.serve.app import create_app  # noqa: E402

__all__ = ["GRACE_S", "create_app", "run_server", "server"]


# How long a stopping server waits for requests in flight (a batch of long generations) before it
# drops them; without a bound one stuck client would keep a SIGTERM'd server alive forever.
GRACE_S = 30.0


def server(app: fastapi.FastAPI, host: str = "127.0.0.1", port: int = 8000, grace_s: float = GRACE_S) -> uvicorn.Server:
    """The uvicorn server of ``app``. On SIGTERM/SIGINT (or ``should_exit``) it stops accepting
    connections, lets requests in flight finish for up to ``grace_s`` seconds, then stops the
    batcher (the app's lifespan) and returns."""
    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                         timeout_graceful_shutdown=grace_s))


def run_server(app: fastapi.FastAPI, host: str = "127.0.0.1", port: int = 8000, grace_s: float = GRACE_S) -> None:
    """Serve until interrupted (uvicorn, one process: the model is loaded once)."""
    server(app, host, port, grace_s).run()
