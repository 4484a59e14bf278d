"""sampler.ipndm: improved PNDM, Adams-Bashforth in sigma with the fixed (uniform-step) weights
(Zhang & Chen 2023, the DEIS paper's iPNDM; ComfyUI's sample_ipndm after zju-pi/diff-sampler).

Order 2, whatever solver_order: the weights are those of uniform steps, and applying them to steps
whose size drifts smoothly (Karras' grid) leaves an O(h^3) local error, and the lower-order
start (an Euler first step) alone caps the rate at 2. A higher solver_order lowers the error
constant, not the rate (test_ode_solvers measures 1.9-2.0 for solver_order 2-4)."""
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

# Adams-Bashforth weights of d_i, d_i-1, d_i-2, d_i-3 for orders 1-4 (row k-1)
AB = ((1.0, 0.0, 0.0, 0.0), (3 / 2, -1 / 2, 0.0, 0.0), (23 / 12, -16 / 12, 5 / 12, 0.0),
      (55 / 24, -59 / 24, 37 / 24, -9 / 24))


@node("sampler.ipndm", version=1)
class Ipndm(Sampler):
    """Implements iPNDM, the improved pseudo numerical method of Zhang & Chen (2023), in sigma."""

    order: ClassVar[int] = 2  # on non-uniform grids (see the module docstring)
    nfe_per_step: ClassVar[int] = 1
    solver_order: int = Field(4, ge=1, le=4, description="Adams-Bashforth order once the history is full "
                                                          "(ComfyUI's max_order)")

    @property
    def step_order(self) -> int:
        """2 on non-uniform grids for any solver_order >= 2 (module docstring); 1 is Euler."""
        return min(self.solver_order, 2)

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """History: the last solver_order - 1 derivatives, newest first (zeros until computed)."""
        state = super().init(x, sigmas, particle)
        return state.replace(history=tuple(torch.zeros_like(x) for _ in range(self.solver_order - 1)))

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """x += (sigma_next - sigma) sum_j w_j d_{i-j}, order min(step + 1, solver_order); x = x0 at sigma 0."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        d = to_d(state.x, sigma, x0)  # (B, ...)
        slope = ab_slope(AB, state.step.clamp(max=self.solver_order - 1), d, state.history)  # (B, ...)
        x = state.x + bcast(sigma_next - sigma, d) * slope  # (B, ...)
        x = torch.where(bcast(sigma_next == 0, x), x0, x)  # (B, ...) ComfyUI's denoising last step
        return state.advance(x=x, denoised=x0, history=(d, *state.history[:-1]) if state.history else ())


def ab_slope(table: tuple[tuple[float, ...], ...], row: torch.Tensor, newest: torch.Tensor,
             older: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """sum_j w_j v_{i-j} (B, ...) with the weights table[row] (row (B,)) of the newest slope and the older
    ones (newest first); table rows are padded with zeros to 4 (shared with sampler.hb and sampler.ghvb)."""
    w = torch.tensor(table, dtype=newest.dtype, device=newest.device)[row]  # (B, 4)
    slope = bcast(w[:, 0], newest) * newest  # (B, ...)
    for j, v_j in enumerate(older, start=1):
        slope = slope + bcast(w[:, j], v_j) * v_j  # (B, ...)
    return slope
