"""sampler.ghvb: Generalized Heavy Ball (Wizadwongsa et al. 2023, arXiv 2307.11118, Sec. 5).

Momentum first, high order after: the velocity averages the slopes eps,
    v_n = (1 - beta) v_n-1 + beta eps_n   (started at v_0 = eps_0),
and the step applies the order-k multistep weights for momentum beta to the last k velocities,
    x_{n+1} = x_n + delta sum_j w_j(k, beta) v_{n-j}   (the authors' AdamBmixer / beta),
which are consistent of order k on uniform steps (the weights cancel the lag of the average);
beta = 1 is PLMS-k (sampler.ipndm, including its x0 on the step to sigma 0) and k = 1 is HB on
Euler. The paper's single order parameter "GHVB q" is k = ceil(q), beta = q - k + 1 (GHVB 1.8:
k = 2, beta = 0.8). Like sampler.ipndm the weights are those of uniform steps and the start is
Euler, so the measured rate on Karras' grid is min(k, 2)."""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .common import to_d
from .ipndm import ab_slope
from .momentum import ghvb_weights, heavy_ball


@node("sampler.ghvb", version=1)
class Ghvb(Sampler):
    """Implements GHVB, the generalized heavy-ball method of Wizadwongsa et al. (2023), Sec. 5."""

    order: ClassVar[int] = 2  # min(solver_order, 2) on non-uniform grids (module docstring)
    nfe_per_step: ClassVar[int] = 1
    solver_order: int = Field(2, ge=1, le=4, description="k: velocities combined per step")
    beta: float = Field(0.8, gt=0, le=1, description="momentum: 1 is PLMS-k, smaller damps more")

    @property
    def step_order(self) -> int:
        """min(solver_order, 2) on non-uniform grids (module docstring)."""
        return min(self.solver_order, 2)

    @property
    def table(self) -> tuple[tuple[float, ...], ...]:
        """(4, 4) weights, row k - 1 for order k, zero padded."""
        return tuple((*ghvb_weights(k, self.beta), *(0.0,) * (4 - k)) for k in range(1, 5))

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """History: the last max(solver_order - 1, 1) velocities, newest first (zeros until computed)."""
        state = super().init(x, sigmas, particle)
        return state.replace(history=tuple(torch.zeros_like(x) for _ in range(max(self.solver_order - 1, 1))))

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """x += (sigma_next - sigma) sum_j w_j v_{n-j}, order min(step + 1, solver_order); x = x0 at sigma 0."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        v = heavy_ball(state.history[0], to_d(state.x, sigma, x0), self.beta, state.step == 0)  # (B, ...)
        older = state.history[:self.solver_order - 1]
        slope = ab_slope(self.table, state.step.clamp(max=self.solver_order - 1), v, older)  # (B, ...)
        x = state.x + bcast(sigma_next - sigma, v) * slope  # (B, ...)
        x = torch.where(bcast(sigma_next == 0, x), x0, x)  # (B, ...) as sampler.ipndm
        return state.advance(x=x, denoised=x0, history=(v, *older[:-1]) if self.solver_order > 1 else (v,))
