"""sampler.ddim: DDIM steps with eta (Song et al. 2021) in sigma space.

Dividing DDIM's VP update x'_vp = alpha' x0 + sqrt(1 - alpha'^2 - s^2) eps + s z by alpha' gives
x' = x0 + sigma_down * eps + sigma_up * z with sigma_up = eta * sigma' sqrt(sigma^2 - sigma'^2) / sigma
and sigma_down^2 = sigma'^2 - sigma_up^2 (k-diffusion's ancestral split): eta = 0 is exactly the
Euler step of the probability-flow ODE, eta = 1 is DDPM's posterior step (sampler.ddpm)."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.state import State, bcast
from .common import NoiseKind, ancestral_step, renoised, sde_noise


@node("sampler.ddim", version=1)
class Ddim(Sampler):
    """Implements DDIM sampling, eq. 12 of Song et al. (2021), with x = x0 + sigma * eps."""

    order: ClassVar[int] = 1
    nfe_per_step: ClassVar[int] = 1
    stochastic: ClassVar[bool] = False  # the default eta = 0; eta > 0 draws noise keyed by (particle, step)
    supports_renoise: ClassVar[bool] = True
    eta: float = Field(0.0, ge=0, le=1, description="0: deterministic DDIM (= Euler); 1: DDPM posterior noise")
    noise: NoiseKind = Field("step", description="'step': fresh normals per step (diffusers' variance_noise); "
                                                 "'brownian': increments of a Brownian tree")

    @property
    def draws_noise(self) -> bool:
        """eta > 0 adds noise keyed by (particle, step); eta = 0 is deterministic DDIM."""
        return self.eta > 0

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """x' = x0 + sigma_down * eps + sigma_up * z; no noise on a step to sigma = 0."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0, x0_r = denoise.estimates(state.x, sigma)  # (B, ...) each
        eps = (state.x - x0) / bcast(sigma, x0)  # (B, ...)
        down, up = ancestral_step(sigma, sigma_next, self.eta)  # (B,)
        x = renoised(x0 + eps * bcast(down, x0), x0, x0_r, sigma, down)  # (B, ...) CFG++: eps of x0_r
        if self.eta > 0 and bool((sigma_next > 0).any()):
            z = sde_noise(noise, self.noise, state.particle, state.step, x, sigma, sigma_next)  # (B, ...)
            x = x + z * bcast(up, x)
        return state.advance(x=x, denoised=x0)
