"""sampler.dpmpp_sde: stochastic DPM-Solver++ with a midpoint stage (k-diffusion sample_dpmpp_sde)."""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.state import State, bcast
from .common import NoiseKind, NoisySampler, ancestral_step, sde_noise, to_d


@node("sampler.dpmpp_sde", version=1)
class DpmppSde(NoisySampler):
    """Implements stochastic DPM-Solver++ (Lu et al. 2022b) with ancestral noise at both stages, as k-diffusion."""

    order: ClassVar[int] = 2  # eta = 0 is singlestep DPM-Solver++(2S) with stage at r
    nfe_per_step: ClassVar[int] = 2  # a step to sigma = 0 is an Euler step: 1 evaluation
    r: float = Field(0.5, gt=0, le=1, description="where the inner stage sits, as a fraction of the step in log sigma")
    noise: NoiseKind = Field("brownian", description="'brownian': increments of a Brownian tree (k-diffusion's "
                                                     "default); 'step': fresh normals per stage")

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """Stage 1: an ancestral first-order step to s = t + r h and a model call there; stage 2: an
        ancestral step to t_next with the blend of both estimates (t = -log sigma). To sigma = 0: Euler."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        x = state.x + to_d(state.x, sigma, x0) * bcast(sigma_next - sigma, state.x)  # (B, ...) the Euler step
        two = torch.nonzero(sigma_next > 0).squeeze(1)  # (T,)
        if two.numel() > 0:
            x = x.index_copy(0, two, self.two_stages(denoise, state, noise, two, x0[two]))
        return state.advance(x=x, denoised=x0)

    def two_stages(self, denoise: Denoiser, state: State, noise: NoiseSource, two: torch.Tensor,
                   x0: torch.Tensor) -> torch.Tensor:
        """The DPM-Solver++ SDE update (T, ...) of particles `two` (T,) with estimates x0 (T, ...)."""
        x, particle, step = state.x[two], state.particle[two], state.step[two]  # (T, ...), (T,), (T,)
        t, t_next = -state.sigma[two].log(), -state.sigma_next[two].log()  # (T,)
        h = t_next - t  # (T,)
        s = t + h * self.r  # (T,)
        sigma, sigma_s, sigma_next = (-t).exp(), (-s).exp(), (-t_next).exp()  # (T,)

        down, up = ancestral_step(sigma, sigma_s, self.eta)  # (T,)
        s_ = -down.log()  # (T,)
        x_2 = bcast(down / sigma, x) * x - bcast((t - s_).expm1(), x) * x0  # (T, ...)
        if self.eta > 0:  # up = 0 for eta = 0
            eps = sde_noise(noise, self.noise, particle, step, x, sigma, sigma_s, slot=0)  # (T, ...)
            x_2 = x_2 + eps * bcast(up * self.s_noise, x)
        x0_2 = denoise(x_2, sigma_s)  # (T, ...)

        down, up = ancestral_step(sigma, sigma_next, self.eta)  # (T,)
        t_next_ = -down.log()  # (T,)
        fac = 1 / (2 * self.r)
        x0_d = (1 - fac) * x0 + fac * x0_2  # (T, ...)
        x = bcast(down / sigma, x) * x - bcast((t - t_next_).expm1(), x) * x0_d  # (T, ...)
        if self.eta > 0:
            eps = sde_noise(noise, self.noise, particle, step, x, sigma, sigma_next, slot=1)  # (T, ...)
            x = x + eps * bcast(up * self.s_noise, x)
        return x
