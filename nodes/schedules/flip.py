"""sigmas.flip: reverse a schedule, from clean to noisy, for inversion (ComfyUI's FlipSigmas)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.sigmas import Sigmas


@dataclass(frozen=True)
class AscendingSigmas(Sigmas):
    """Sigmas that rise (non-decreasing, >= 0): a reversed schedule, which steps data towards noise."""

    def __post_init__(self) -> None:
        v = self.values
        if v.ndim != 1 or v.numel() < 2 or not torch.isfinite(v).all() or (v < 0).any() or (v[1:] < v[:-1]).any():
            raise NodeError(f"ascending sigmas must be a 1-D, finite, >= 0, non-decreasing tensor of at least "
                            f"2 levels, got {v.tolist()}")
        object.__setattr__(self, "values", v.detach().to(torch.float64).cpu())


@node("sigmas.flip", version=1)
class Flip(Node):
    """Reverses a schedule for inversion (unsampling, DDIM inversion; Song et al. 2021); a leading 0 becomes `first`."""

    first: float = Field(1e-4, gt=0, description="replaces a leading 0, from which no step is defined (ComfyUI: 1e-4)")

    def run(self, sigmas: Sigmas) -> AscendingSigmas:
        """sigmas reversed; samplers then integrate the same ODE from low to high noise."""
        v = sigmas.values.flip(0).clone()  # (S + 1,)
        if v[0] == 0:
            if self.first > v[1]:
                raise NodeError(f"param 'first' is {self.first}, above the next level {v[1].item():g}; "
                                f"use a value at most {v[1].item():g}")
            v[0] = self.first
        return AscendingSigmas(v)  # (S + 1,)
