"""schedule.manual: noise levels written out in the workflow."""
from __future__ import annotations

import math

import torch
from pydantic import Field, field_validator

from ..api import Node, node
from ..core.sigmas import Sigmas
from .common import F64


@node("schedule.manual", version=1)
class Manual(Node):
    """Noise levels given as a list (ComfyUI's ManualSigmas): non-increasing, >= 0, usually ending in 0."""

    values: list[float] = Field(min_length=2, description="sigma levels, e.g. [14.6, 3.0, 0.5, 0.0]")

    @field_validator("values")
    @classmethod
    def _levels(cls, value: list[float]) -> list[float]:
        """Finite, non-negative and non-increasing, as every sampler expects."""
        for i, v in enumerate(value):
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"entry {i} is {v}; every level must be finite and >= 0")
            if i and v > value[i - 1]:
                raise ValueError(f"entry {i} ({v}) is above entry {i - 1} ({value[i - 1]}); levels must not increase")
        return value

    def run(self) -> Sigmas:
        """The list as float64 Sigmas (a list not ending in 0 stops at its last level)."""
        return Sigmas(torch.tensor(self.values, dtype=F64))  # (S + 1,)
