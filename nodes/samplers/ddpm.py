"""sampler.ddpm: ancestral steps of DDPM (Ho et al. 2020) in sigma space.

The posterior q(x_vp' | x_vp, x0) divided by alpha' is, with x = x0 + sigma * eps,
mean x0 + (sigma'^2 / sigma^2) (x - x0) and variance sigma'^2 (sigma^2 - sigma'^2) / sigma^2: the
ancestral Euler step with eta = 1 (sampler.euler_ancestral, sampler.ddim with eta = 1), exactly.
diffusers' "fixed_large" keeps that mean with variance beta_t / alpha'^2, which in sigma space is
(sigma^2 - sigma'^2) (1 + sigma'^2) / (1 + sigma^2): a VP quantity, so it needs alpha = 1 / sqrt(1 + sigma^2)."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.state import State, bcast
from .common import NoiseKind, sde_noise


@node("sampler.ddpm", version=1)
class Ddpm(Sampler):
    """Implements DDPM ancestral sampling, Algorithm 2 of Ho et al. (2020), with x = x0 + sigma * eps."""

    order: ClassVar[int] = 1  # weak order
    nfe_per_step: ClassVar[int] = 1
    stochastic: ClassVar[bool] = True
    variance: Literal["posterior", "beta"] = Field(
        "posterior", description="'posterior': beta_tilde (diffusers fixed_small); 'beta': beta_t (fixed_large)")
    noise: NoiseKind = Field("step", description="'step': fresh normals per step; 'brownian': Brownian-tree increments")

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """Posterior mean plus noise; a step to sigma = 0 adds none (diffusers: no noise at t = 0)."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        keep = (sigma_next / sigma) ** 2  # (B,)
        x = x0 + (state.x - x0) * bcast(keep, x0)  # (B, ...)
        if self.variance == "posterior":
            var = sigma_next ** 2 * (1 - keep)  # (B,)
        else:
            var = (sigma ** 2 - sigma_next ** 2) * (1 + sigma_next ** 2) / (1 + sigma ** 2)  # (B,)
        if bool((sigma_next > 0).any()):
            z = sde_noise(noise, self.noise, state.particle, state.step, x, sigma, sigma_next)  # (B, ...)
            x = x + z * bcast(var.sqrt() * (sigma_next > 0), x)
        return state.advance(x=x, denoised=x0)
