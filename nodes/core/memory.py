"""MemoryEstimate: what a node says it will allocate, so the runtime can refuse a run that cannot
fit before any compute (a node's params may define `memory_estimate() -> MemoryEstimate | None`)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryEstimate:
    """About `nbytes` of peak memory for `what`, set by the parameters `params` (the ones to lower)."""

    nbytes: int
    what: str  # e.g. "1000000000 x [2] float32 noise"
    params: tuple[str, ...]
