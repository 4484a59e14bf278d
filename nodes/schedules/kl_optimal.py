"""schedule.kl_optimal: the KL-optimal schedule of Sabour et al. (2024), linear in arctan(sigma)."""
from __future__ import annotations

import math

import torch

from ..api import node
from ..core.sigmas import Sigmas
from .common import F64, SigmaRange, append_zero


@node("schedule.kl_optimal", version=1)
class KLOptimal(SigmaRange):
    """Implements the KL-optimal schedule of Sabour et al. (2024, Align Your Steps): sigma = tan of a linear ramp in arctan(sigma)."""

    def run(self) -> Sigmas:
        """tan((1 - r) atan(sigma_max) + r atan(sigma_min)), r = linspace(0, 1, steps), then 0 (ComfyUI kl_optimal)."""
        ramp = torch.linspace(0, 1, self.steps, dtype=F64)  # (S,)
        angle = ramp * math.atan(self.sigma_min) + (1 - ramp) * math.atan(self.sigma_max)  # (S,)
        return Sigmas(append_zero(angle.tan()))  # (S + 1,)
