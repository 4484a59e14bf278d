"""schedule.karras: the noise levels of Karras et al. (2022), eq. 5 (k-diffusion get_sigmas_karras)."""
from __future__ import annotations

import torch
from pydantic import Field

from ..api import node
from ..core.sigmas import Sigmas
from .common import F64, SigmaRange, append_zero


@node("schedule.karras", version=1)
class Karras(SigmaRange):
    """Implements the noise schedule of Karras et al. (2022), eq. 5, followed by sigma = 0."""

    rho: float = Field(7.0, gt=0, description="7 spends more steps at low noise (Karras et al. 2022)")

    def run(self) -> Sigmas:
        """k-diffusion's get_sigmas_karras, in float64."""
        ramp = torch.linspace(0, 1, self.steps, dtype=F64)  # (S,)
        min_inv_rho = self.sigma_min ** (1 / self.rho)
        max_inv_rho = self.sigma_max ** (1 / self.rho)
        sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** self.rho  # (S,)
        return Sigmas(append_zero(sigmas))  # (S + 1,)
