"""Node plugins, one role per folder. `builtin_nodes()` is the explicit list of built-ins."""
from __future__ import annotations


def builtin_nodes() -> list[type]:
    """Every built-in node class (imported here, so nothing scans folders)."""
    return []
