"""schedule.ays: the Align Your Steps schedules of Sabour et al. (2024), any step count."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..api import Node, node
from ..core.sigmas import Sigmas
from ..models.sampling import DiscreteVPSampling
from .common import F64, loglinear_interp

# The published 10-step schedules (NVIDIA's AYS how-to). SD1.5 and SDXL are given as timesteps of
# the scaled_linear discrete VP model (beta 0.00085 .. 0.012, 1000 steps); SVD as EDM sigmas.
# The last entry is the clean end: it is replaced by sigma = 0.
SD15_TIMESTEPS = (999, 850, 736, 645, 545, 455, 343, 233, 124, 24, 0)
SDXL_TIMESTEPS = (999, 845, 730, 587, 443, 310, 193, 116, 53, 13, 0)
SVD_SIGMAS = (700.0, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002)


@node("schedule.ays", version=1)
class AlignYourSteps(Node):
    """Implements the Align Your Steps schedules of Sabour et al. (2024), log-linearly interpolated to any step count."""

    model_type: Literal["sd15", "sdxl", "svd"] = Field("sd15", description="which published table")
    steps: int = Field(10, ge=1, description="solver steps; 10 is the published table itself")

    def run(self) -> Sigmas:
        """The table's 11 levels (10 steps), resampled to steps + 1 levels in log sigma; the last set to 0."""
        levels = published_levels(self.model_type)  # (11,)
        if self.steps + 1 != levels.numel():
            levels = loglinear_interp(levels, self.steps + 1)  # (S + 1,)
        levels[-1] = 0.0
        return Sigmas(levels)  # (S + 1,)


def published_levels(model_type: str) -> torch.Tensor:
    """(11,) float64 sigmas of the published table: sigma(alphas_cumprod[t]) at SD timesteps, or SVD's sigmas."""
    if model_type == "svd":
        return torch.tensor(SVD_SIGMAS, dtype=F64)
    timesteps = torch.tensor(SD15_TIMESTEPS if model_type == "sd15" else SDXL_TIMESTEPS)  # (11,)
    return DiscreteVPSampling.from_betas("scaled_linear", 1000, 0.00085, 0.012).sigmas[timesteps]
