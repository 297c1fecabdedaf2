"""selfensemble: ask one question through N paraphrases and fuse them into one answer."""

from __future__ import annotations


def _version() -> str:
    """The installed distribution's version (pyproject.toml is the one place it is written)."""
    from importlib import metadata

    try:
        return metadata.version("selfensemble")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _version()

# Public API, imported lazily so `import selfensemble` (and the CLI's start) stays cheap.
_EXPORTS = {
    "load_model": "selfensemble.engine.models",
    "embedded_model_path": "selfensemble.engine.models",
    "info": "selfensemble.about",
    "Engine": "selfensemble.engine.engine",
    "EngineConfig": "selfensemble.config.engine",
    "Query": "selfensemble.engine.queries",
    "Answer": "selfensemble.engine.queries",
    "METHODS": "selfensemble.methods.registry",
    "Method": "selfensemble.methods.registry",
    "register_method": "selfensemble.methods.registry",
    "GenerationConfig": "selfensemble.config.generation",
    "PromptFormat": "selfensemble.engine.prompts",
    "variant_query": "selfensemble.engine.variants",
    "SelfEnsembleError": "selfensemble.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'selfensemble' has no attribute {name!r}")
