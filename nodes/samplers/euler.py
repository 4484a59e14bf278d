"""sampler.euler: first-order steps of the probability-flow ODE (k-diffusion sample_euler)."""
from __future__ import annotations

from typing import ClassVar

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.state import State, bcast
from .common import to_d


@node("sampler.euler", version=1)
class Euler(Sampler):
    """Implements Algorithm 2 (Euler steps) from Karras et al. (2022), without churn."""

    order: ClassVar[int] = 1
    nfe_per_step: ClassVar[int] = 1

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """One Euler step from state.sigma to state.sigma_next."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        x = state.x + to_d(state.x, sigma, x0) * bcast(sigma_next - sigma, state.x)  # (B, ...)
        return state.advance(x=x, denoised=x0)
