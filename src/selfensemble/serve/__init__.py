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

__all__ = ["create_app", "run_server"]


def run_server(app: fastapi.FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted (uvicorn, one process: the model is loaded once)."""
    uvicorn.run(app, host=host, port=port, log_level="warning")
