"""sampler.lcm: multistep consistency sampling (Song et al. 2023, Alg. 1; Luo et al. 2023's LCM).

A consistency model maps any noisy x straight to x0, so each step denoises fully and re-noises
to the next level: x' = D(x, sigma) + sigma' z. In VP terms x'_vp = alpha' x0 + sigma'_vp z, which
is diffusers' LCMScheduler step divided by alpha'. The consistency parametrisation
(c_skip, c_out) belongs to the model, i.e. to the Denoiser, not to this sampler."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.state import State, bcast
from .common import NoiseKind, sde_noise


@node("sampler.lcm", version=1)
class Lcm(Sampler):
    """Implements multistep consistency sampling, Algorithm 1 of Song et al. (2023)."""

    order: ClassVar[int] = 1
    nfe_per_step: ClassVar[int] = 1
    stochastic: ClassVar[bool] = True
    noise: NoiseKind = Field("step", description="'step': fresh normals per step; 'brownian': Brownian-tree increments")

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """x' = D(x, sigma) + sigma' z (no noise on the step to sigma = 0)."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        x = x0
        if bool((sigma_next > 0).any()):
            z = sde_noise(noise, self.noise, state.particle, state.step, x0, sigma, sigma_next)  # (B, ...)
            x = x0 + z * bcast(sigma_next, x0)
        return state.advance(x=x, denoised=x0)
