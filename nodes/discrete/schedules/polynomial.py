"""mask_schedule.polynomial: alpha(t) = 1 - t^p (Shi et al. 2024, MD4's polynomial schedule)."""
from __future__ import annotations

import torch
from pydantic import Field

from ...api import node
from ..schedule import MaskSchedule, MaskScheduleNode


class PolynomialSchedule(MaskSchedule):
    def __init__(self, steps: int, power: float):
        super().__init__(steps)
        self.power = power

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - t.to(torch.float64) ** self.power

    def time_of(self, alpha: torch.Tensor) -> torch.Tensor:
        return (1.0 - alpha.to(torch.float64)).clamp(0.0, 1.0) ** (1.0 / self.power)


@node("mask_schedule.polynomial", version=1)
class Polynomial(MaskScheduleNode):
    """alpha(t) = 1 - t^power; power 1 is linear (Shi et al. 2024, MD4)."""

    power: float = Field(2.0, gt=0, le=100, description="exponent p of alpha(t) = 1 - t^p")

    def run(self) -> MaskSchedule:
        return PolynomialSchedule(self.steps, self.power)
