"""schedule.exponential: noise levels uniform in log sigma (k-diffusion get_sigmas_exponential)."""
from __future__ import annotations

import math

import torch

from ..api import node
from ..core.sigmas import Sigmas
from .common import F64, SigmaRange, append_zero


@node("schedule.exponential", version=1)
class Exponential(SigmaRange):
    """Implements k-diffusion's exponential schedule (uniform in log sigma, i.e. in DPM-Solver's lambda; Lu et al. 2022)."""

    def run(self) -> Sigmas:
        """exp(linspace(log sigma_max, log sigma_min, steps)), then 0."""
        log_sigmas = torch.linspace(math.log(self.sigma_max), math.log(self.sigma_min), self.steps, dtype=F64)  # (S,)
        return Sigmas(append_zero(log_sigmas.exp()))  # (S + 1,)
