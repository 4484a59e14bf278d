"""Execution backends: `LocalBackend` (default) and, with the `ray` extra, `RayBackend`.

`RayBackend` is imported lazily, so the core never imports ray."""
from __future__ import annotations

from typing import Any

from .base import Backend, LocalBackend

__all__ = ["Backend", "LocalBackend", "RayBackend", "backend_named"]


def __getattr__(name: str) -> Any:
    if name == "RayBackend":
        from .ray_backend import RayBackend

        return RayBackend
    raise AttributeError(name)


def backend_named(name: str, address: str | None = None) -> Backend:
    """The backend a CLI flag names: 'local' or 'ray' (address: None, 'auto' or host:port)."""
    if name == "local":
        return LocalBackend()
    if name == "ray":
        from .ray_backend import RayBackend

        return RayBackend(address=address)
    raise ValueError(f"unknown backend '{name}': expected local or ray")
