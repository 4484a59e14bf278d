"""schedule.vp: the continuous VP-SDE noise levels of Song et al. (2021) (k-diffusion get_sigmas_vp)."""
from __future__ import annotations

import torch
from pydantic import Field

from ..api import Node, node
from ..core.sigmas import Sigmas
from .common import F64, append_zero


@node("schedule.vp", version=1)
class VP(Node):
    """Implements the VP-SDE schedule of Song et al. (2021): sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), t from 1 to eps_s."""

    steps: int = Field(10, ge=1, description="solver steps (levels before the final 0)")
    beta_d: float = Field(19.9, gt=0, description="beta_max - beta_min of the linear VP-SDE (Song et al. 2021)")
    beta_min: float = Field(0.1, ge=0)
    eps_s: float = Field(1e-3, gt=0, lt=1, description="the smallest time sampled (t = 1 is pure noise)")

    def run(self) -> Sigmas:
        """t = linspace(1, eps_s, steps); expm1 keeps the small sigmas accurate."""
        t = torch.linspace(1, self.eps_s, self.steps, dtype=F64)  # (S,)
        sigmas = torch.special.expm1(self.beta_d * t**2 / 2 + self.beta_min * t).sqrt()  # (S,)
        return Sigmas(append_zero(sigmas))  # (S + 1,)
