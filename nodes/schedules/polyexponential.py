"""schedule.polyexponential: log sigma polynomial in the step ramp (k-diffusion get_sigmas_polyexponential)."""
from __future__ import annotations

import math

import torch
from pydantic import Field

from ..api import node
from ..core.sigmas import Sigmas
from .common import F64, SigmaRange, append_zero


@node("schedule.polyexponential", version=1)
class Polyexponential(SigmaRange):
    """Implements k-diffusion's polyexponential schedule: log sigma = log sigma_min + ramp^rho * log(sigma_max / sigma_min)."""

    rho: float = Field(1.0, gt=0, description="1 is the exponential schedule; larger spends more steps at low noise")

    def run(self) -> Sigmas:
        """ramp = linspace(1, 0, steps) ** rho mapped to log sigma, then 0."""
        ramp = torch.linspace(1, 0, self.steps, dtype=F64) ** self.rho  # (S,)
        log_min, log_max = math.log(self.sigma_min), math.log(self.sigma_max)
        return Sigmas(append_zero(torch.exp(ramp * (log_max - log_min) + log_min)))  # (S + 1,)
