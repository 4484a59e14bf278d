"""MemoryEstimate: what a node says it will allocate, so the runtime can refuse a run that cannot
fit before any compute (a node's params may define `memory_estimate() -> MemoryEstimate | None`);
Residency: the run's device-memory manager as nodes see it (NodeContext.residency)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MemoryEstimate:
    """About `nbytes` of peak memory for `what`, set by the parameters `params` (the ones to lower)."""

    nbytes: int
    what: str  # e.g. "1000000000 x [2] float32 noise"
    params: tuple[str, ...]


class Residency(ABC):
    """Where a run keeps large modules (runtime/memory.py's MemoryManager): a managed module lives on
    `offload_device` and moves to the run's device when called, offloading others to stay within a budget."""

    offload_device: torch.device  # where managed modules are loaded and offloaded to ('cpu')

    @abstractmethod
    def manage(self, name: str, module: torch.nn.Module) -> None:
        """Take `module` (a whole component, e.g. a pipeline's UNet) under management as `name`; NodeError
        naming it when it alone cannot fit."""
