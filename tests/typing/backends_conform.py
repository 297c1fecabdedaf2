"""Read by mypy (tests/test_backend_types.py), never run: both backends are Backends to a type checker."""

from selfensemble.pipeline.backends.base import Backend
from selfensemble.pipeline.backends.local import LocalBackend
from selfensemble.pipeline.backends.ray import RayBackend


def local_is_a_backend(backend: LocalBackend) -> Backend:
    return backend


def ray_is_a_backend(backend: RayBackend) -> Backend:
    return backend
