"""mask_schedule.geometric: total noise sigma(t) = sigma_min^(1-t) sigma_max^t, alpha = exp(-sigma)
(Lou et al. 2024, SEDD's geometric schedule)."""
from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator

from ...api import node
from ..schedule import MaskSchedule, MaskScheduleNode


class GeometricSchedule(MaskSchedule):
    def __init__(self, steps: int, sigma_min: float, sigma_max: float):
        super().__init__(steps)
        self.log_min, self.log_max = math.log(sigma_min), math.log(sigma_max)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float64)
        return torch.exp(-torch.exp(self.log_min + t * (self.log_max - self.log_min)))

    def time_of(self, alpha: torch.Tensor) -> torch.Tensor:
        sigma = -torch.log(alpha.to(torch.float64).clamp(min=1e-300))
        t = (torch.log(sigma.clamp(min=1e-300)) - self.log_min) / (self.log_max - self.log_min)
        return t.clamp(0.0, 1.0)


@node("mask_schedule.geometric", version=1)
class Geometric(MaskScheduleNode):
    """sigma(t) = sigma_min^(1-t) sigma_max^t, alpha(t) = exp(-sigma(t)) (Lou et al. 2024, SEDD)."""

    sigma_min: float = Field(1e-4, gt=0, description="total noise at t = 0 (alpha(0) = exp(-sigma_min) ~ 1)")
    sigma_max: float = Field(20.0, gt=0, le=700, description="total noise at t = 1 (alpha(1) = exp(-sigma_max) ~ 0)")

    @model_validator(mode="after")
    def _ordered(self) -> Geometric:
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max ({self.sigma_max}) must exceed sigma_min ({self.sigma_min})")
        return self

    def run(self) -> MaskSchedule:
        return GeometricSchedule(self.steps, self.sigma_min, self.sigma_max)
