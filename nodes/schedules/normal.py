"""schedule.normal: uniform in the model's own time variable (ComfyUI's normal scheduler)."""
from __future__ import annotations

import math

import torch
from pydantic import Field

from ..api import Node, node
from ..core.model import Model, ModelSampling
from ..core.sigmas import Sigmas
from .common import F64, append_zero


@node("schedule.normal", version=1)
class Normal(Node):
    """Noise levels at timesteps evenly spaced from the model's sigma_max to its sigma_min (ComfyUI's normal; Ho et al. 2020 time grid)."""

    steps: int = Field(10, ge=1, description="solver steps (levels before the final 0)")

    def run(self, model: Model) -> Sigmas:
        """sigma(linspace(t(sigma_max), t(sigma_min), steps)), then 0."""
        return Sigmas(uniform_in_time(model.sampling, self.steps, sgm=False))


def uniform_in_time(s: ModelSampling, steps: int, sgm: bool) -> torch.Tensor:
    """(steps + 1,) levels at evenly spaced model times, ending in 0 (ComfyUI normal_scheduler).

    sgm: steps + 1 times from t(sigma_max) to t(sigma_min), the last dropped for the final 0
    (Stability's sgm 'uniform'). Otherwise `steps` times including t(sigma_min); a model whose
    sigma_min is already 0 (to 1e-5) gets steps + 1 times and that end becomes exactly 0."""
    start = s.timestep(torch.tensor(s.sigma_max, dtype=F64))
    end = s.timestep(torch.tensor(s.sigma_min, dtype=F64))
    if sgm:
        return append_zero(s.sigma(torch.linspace(float(start), float(end), steps + 1, dtype=F64)[:-1]))
    if math.isclose(float(s.sigma(end)), 0.0, abs_tol=1e-5):
        levels = s.sigma(torch.linspace(float(start), float(end), steps + 1, dtype=F64))  # (S + 1,)
        levels[-1] = 0.0
        return levels
    return append_zero(s.sigma(torch.linspace(float(start), float(end), steps, dtype=F64)))  # (S + 1,)
