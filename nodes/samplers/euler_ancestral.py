"""sampler.euler_ancestral: Euler steps to sigma_down plus fresh noise sigma_up (k-diffusion sample_euler_ancestral)."""
from __future__ import annotations

from typing import ClassVar

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.state import State, bcast
from .common import NoisySampler, ancestral_step, renoised, sde_noise, to_d


@node("sampler.euler_ancestral", version=1)
class EulerAncestral(NoisySampler):
    """Implements ancestral sampling (Ho et al. 2020) with Euler steps of Karras et al. (2022), Alg. 2."""

    order: ClassVar[int] = 1  # eta = 0 is the Euler ODE solver
    nfe_per_step: ClassVar[int] = 1
    supports_renoise: ClassVar[bool] = True

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """One Euler step to sigma_down, then noise of std sigma_up (none on a step to sigma = 0)."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0, x0_r = denoise.estimates(state.x, sigma)  # (B, ...) each
        down, up = ancestral_step(sigma, sigma_next, self.eta)  # (B,)
        x = state.x + to_d(state.x, sigma, x0) * bcast(down - sigma, state.x)  # (B, ...)
        x = renoised(x, x0, x0_r, sigma, down)  # (B, ...)
        if self.eta > 0 and bool((sigma_next > 0).any()):  # up = 0 where sigma_next = 0, and for eta = 0
            eps = sde_noise(noise, self.noise, state.particle, state.step, x, sigma, sigma_next)  # (B, ...)
            x = x + eps * bcast(up * self.s_noise, x)
        return state.advance(x=x, denoised=x0)
