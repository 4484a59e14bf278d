"""schedule.karras: the noise levels of Karras et al. (2022), eq. 5 (k-diffusion get_sigmas_karras)."""
from __future__ import annotations

import torch
from pydantic import Field, ValidationInfo, field_validator

from ..api import Node, node
from ..core.sigmas import Sigmas


@node("schedule.karras", version=1)
class Karras(Node):
    """Implements the noise schedule of Karras et al. (2022), eq. 5, followed by sigma = 0."""

    steps: int = Field(10, ge=1, description="solver steps (levels before the final 0)")
    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(80.0, gt=0, validate_default=True)
    rho: float = Field(7.0, gt=0, description="7 spends more steps at low noise (Karras et al. 2022)")

    @field_validator("sigma_max")
    @classmethod
    def _above_min(cls, value: float, info: ValidationInfo) -> float:
        """sigma_max must exceed sigma_min so the schedule decreases."""
        low = info.data.get("sigma_min")
        if low is not None and not value > low:
            raise ValueError(f"must be greater than sigma_min ({low})")
        return value

    def run(self) -> Sigmas:
        """k-diffusion's get_sigmas_karras, in float64."""
        ramp = torch.linspace(0, 1, self.steps, dtype=torch.float64)  # (S,)
        min_inv_rho = self.sigma_min ** (1 / self.rho)
        max_inv_rho = self.sigma_max ** (1 / self.rho)
        sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** self.rho  # (S,)
        return Sigmas(torch.cat([sigmas, sigmas.new_zeros(1)]))  # (S + 1,)
