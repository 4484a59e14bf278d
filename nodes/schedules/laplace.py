"""schedule.laplace: log sigma distributed as a Laplace(mu, beta) quantile (Hang et al. 2024; ComfyUI)."""
from __future__ import annotations

import torch
from pydantic import Field

from ..api import node
from ..core.sigmas import Sigmas
from .common import F64, SigmaRange, append_zero

EPSILON = 1e-5  # keeps log(0) out of the quantile at both ends (ComfyUI's value)


@node("schedule.laplace", version=1)
class Laplace(SigmaRange):
    """Implements the Laplace schedule of Hang et al. (2024): log sigma at Laplace(mu, beta) quantiles, clamped to [sigma_min, sigma_max]."""

    mu: float = Field(0.0, description="location of log sigma: steps concentrate around sigma = e^mu")
    beta: float = Field(0.5, gt=0, description="scale of log sigma: smaller concentrates steps more")

    def run(self) -> Sigmas:
        """lambda = mu - beta sign(1/2 - x) log(1 - 2|1/2 - x| + eps), x = linspace(0, 1, steps); sigma = e^lambda, then 0."""
        x = torch.linspace(0, 1, self.steps, dtype=F64)  # (S,)
        lam = self.mu - self.beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + EPSILON)  # (S,)
        sigmas = lam.exp().clamp(min=self.sigma_min, max=self.sigma_max)  # (S,)
        return Sigmas(append_zero(sigmas))  # (S + 1,)
