"""discrete_sampler.ancestral: the exact reverse process of masked diffusion on the schedule's grid
(Austin et al. 2021, D3PM; Sahoo et al. 2024, MDLM): from t to s every masked position becomes clean
with probability (alpha(s) - alpha(t)) / (1 - alpha(t)), its token drawn from p(x0 | x_t)."""
from __future__ import annotations

import torch
from pydantic import Field

from ...api import node
from ...core.noise import NoiseSource
from ..denoiser import DiscreteDenoiser
from ..sampler import DiscreteSampler
from ..schedule import MaskSchedule
from ..state import DiscreteState
from .unmasking import next_times, unmask_step


@node("discrete_sampler.ancestral", version=1)
class Ancestral(DiscreteSampler):
    """MDLM's ancestral sampler: q(x_s | x_t, x0 ~ p(x0 | x_t)) one step of the grid at a time (Sahoo et al. 2024)."""

    reuse_x0: bool = Field(True, description="reuse p(x0 | x_t) while no token of the row changed (MDLM's cache; "
                           "exact for time-agnostic masked models, Zheng et al. 2024), skipping those denoiser calls")

    def finished(self, state: DiscreteState, schedule: MaskSchedule, den: DiscreteDenoiser) -> torch.Tensor:
        """Every step taken, or no masked position left (later steps could change nothing)."""
        return super().finished(state, schedule, den) | ~(state.masked(den.mask_id) & ~state.fixed).any(-1)

    def jump_probability(self, schedule: MaskSchedule, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        """(B,) P(a position masked at t is clean at t_next)."""
        return schedule.unmask_probability(t, t_next)

    def step(self, den: DiscreteDenoiser, schedule: MaskSchedule, state: DiscreteState,
             noise: NoiseSource) -> DiscreteState:
        t_next = next_times(schedule, state)  # (B,)
        jump = self.jump_probability(schedule, state.t, t_next)  # (B,)
        return unmask_step(den, state, t_next, jump, noise, self.precision, self.reuse_x0)
