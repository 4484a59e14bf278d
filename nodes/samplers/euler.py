"""sampler.euler: first-order steps of the probability-flow ODE (k-diffusion sample_euler)."""
from __future__ import annotations

from typing import ClassVar

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.state import State, bcast
from .common import renoised, to_d


@node("sampler.euler", version=1)
class Euler(Sampler):
    """Implements Algorithm 2 (Euler steps) from Karras et al. (2022), without churn."""

    order: ClassVar[int] = 1
    nfe_per_step: ClassVar[int] = 1
    supports_renoise: ClassVar[bool] = True

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """One Euler step from state.sigma to state.sigma_next."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0, x0_r = denoise.estimates(state.x, sigma)  # (B, ...) each
        x = state.x + to_d(state.x, sigma, x0) * bcast(sigma_next - sigma, state.x)  # (B, ...)
        x = renoised(x, x0, x0_r, sigma, sigma_next)  # (B, ...) CFG++: x0 + sigma_next (x - x0_r) / sigma
        return state.advance(x=x, denoised=x0)
