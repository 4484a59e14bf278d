"""sampler.dpm_solver: singlestep DPM-Solver of a fixed order on the given sigmas (the steps of
k-diffusion's DPMSolver; sample_dpm_fast picks its own grid and orders, which a schedule plus
this node reproduces, see the parity tests)."""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.state import State, bcast
from .common import dpm_solver_stages


@node("sampler.dpm_solver", version=1)
class DpmSolver(Sampler):
    """Implements DPM-Solver-1, -2 and -3 singlestep steps (Lu et al. 2022, Algorithms 1 and 2)."""

    order: ClassVar[int] = 3  # of the default solver_order; each solver_order k converges with order k
    nfe_per_step: ClassVar[int] = 3  # = solver_order; a step to sigma = 0 is an Euler step: 1 evaluation
    solver_order: int = Field(3, ge=1, le=3, description="1, 2 or 3: DPM-Solver-k on every step")

    @property
    def step_order(self) -> int:
        """DPM-Solver-k converges with order k."""
        return self.solver_order

    @property
    def step_nfe(self) -> int:
        """One evaluation per stage."""
        return self.solver_order

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """One DPM-Solver-k step in t = -log(sigma); particles stepping to sigma = 0 take x = x0."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        x = x0.clone()  # (B, ...) the Euler step to sigma = 0 is x0 itself
        go = torch.nonzero(sigma_next > 0).squeeze(1)  # (G,)
        if go.numel() > 0:
            x_g, s_g = state.x[go], sigma[go]  # (G, ...), (G,)
            eps = (x_g - x0[go]) / bcast(s_g, x_g)  # (G, ...)
            t, t_next = -s_g.log(), -sigma_next[go].log()  # (G,)
            x = x.index_copy(0, go, dpm_solver_stages(denoise, x_g, t, t_next, eps, self.solver_order)[0])
        return state.advance(x=x, denoised=x0)
