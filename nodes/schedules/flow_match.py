"""schedule.flow_match: the grid of diffusers' FlowMatchEulerDiscreteScheduler.set_timesteps(steps) for a
rectified-flow model (SD3's default sampling schedule).

diffusers spaces flow times uniformly from 1 down to its training table's last entry, shift(1 / N) (N train
timesteps, 1000), then shifts every one: t' = s t / (1 + (s - 1) t) with the model's static shift s (SD3: 3.0).
In VE sigma = t / (1 - t) the first time, t = 1 (pure noise), is infinite, which samplegraph's sigmas cannot
hold: this node starts at the model's sigma_max, shift(t_max) (t_max = 0.999, VE 2997 at s = 3), and keeps every
later level exactly. A scheduler with use_dynamic_shifting has s = 1 here (the grid then ends at 1 / N, as
diffusers'), and schedule.time_shift (mode 'flux') applies the resolution-dependent shift after it.
Float32 latents at sigma ~3000 lose ~1e-4 of x0 to round-off in the first Euler step: prefer latent.empty's
dtype float64 (the network still runs in its own dtype)."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.model import Model
from ..core.sigmas import Sigmas
from ..models.sampling import RectifiedFlowSampling, flow_time_to_sigma, time_shift
from .common import F64, append_zero


@node("schedule.flow_match", version=1)
class FlowMatch(Node):
    """Implements the shifted uniform flow-time grid of Esser et al. (2024, SD3, Sec. 5.3.2) as diffusers' FlowMatchEulerDiscreteScheduler sets it."""

    steps: int = Field(28, ge=1, description="solver steps (levels before the final 0; SD3's default 28)")

    def run(self, model: Model) -> Sigmas:
        """sigma(shift(linspace(1, shift(1 / N), steps))), the first level capped at the model's sigma_max, then 0."""
        s = model.sampling
        if not isinstance(s, RectifiedFlowSampling):
            raise NodeError(f"input 'model' is a {type(s).__name__} model; schedule.flow_match needs a rectified-flow "
                            f"model (SD3, Flux: a FlowMatchEulerDiscreteScheduler); for others use schedule.normal")
        end = time_shift(torch.tensor(1 / s.multiplier, dtype=F64), s.shift)  # the table's last time, shifted
        times = time_shift(torch.linspace(1.0, float(end), self.steps, dtype=F64), s.shift)  # (S,) flow times
        later = flow_time_to_sigma(times[1:])  # (S - 1,) VE sigmas after the first
        # beyond ~1000 steps the second level passes shift(t_max): the first step then has length 0
        first = max(s.sigma_max, float(later[0])) if later.numel() else s.sigma_max
        return Sigmas(append_zero(torch.cat([later.new_tensor([first]), later])))  # (S + 1,)
