"""sampler.dpmpp_2s_ancestral: DPM-Solver++(2S) steps to sigma_down plus fresh noise
(k-diffusion sample_dpmpp_2s_ancestral)."""
from __future__ import annotations

from typing import ClassVar

import torch

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.state import State, bcast
from .common import NoisySampler, ancestral_step, sde_noise, to_d


@node("sampler.dpmpp_2s_ancestral", version=1)
class Dpmpp2SAncestral(NoisySampler):
    """Implements ancestral sampling (Ho et al. 2020) with DPM-Solver++(2S) steps (Lu et al. 2022b, Alg. 1)."""

    order: ClassVar[int] = 2  # eta = 0 is DPM-Solver++(2S)
    nfe_per_step: ClassVar[int] = 2  # a step with sigma_down = 0 is an Euler step: 1 evaluation

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """A two-stage data-prediction step in lambda = -log sigma to sigma_down (midpoint r = 1/2),
        then noise sigma_up where sigma_next > 0; sigma_down = 0 takes the Euler step."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        down, up = ancestral_step(sigma, sigma_next, self.eta)  # (B,)
        x = state.x + to_d(state.x, sigma, x0) * bcast(down - sigma, state.x)  # (B, ...) the Euler step
        two = torch.nonzero(down > 0).squeeze(1)  # (T,)
        if two.numel() > 0:
            x_t, x0_t = state.x[two], x0[two]  # (T, ...)
            t, t_next = -sigma[two].log(), -down[two].log()  # (T,)
            h = t_next - t  # (T,)
            s = t + h / 2  # (T,)
            x_2 = bcast((-s).exp() / (-t).exp(), x_t) * x_t - bcast((-h / 2).expm1(), x_t) * x0_t  # (T, ...)
            x0_2 = denoise(x_2, (-s).exp())  # (T, ...)
            x_t = bcast((-t_next).exp() / (-t).exp(), x_t) * x_t - bcast((-h).expm1(), x_t) * x0_2  # (T, ...)
            x = x.index_copy(0, two, x_t)
        if self.eta > 0 and bool((sigma_next > 0).any()):  # up = 0 where sigma_next = 0, and for eta = 0
            eps = sde_noise(noise, self.noise, state.particle, state.step, x, sigma, sigma_next)  # (B, ...)
            x = x + eps * bcast(up * self.s_noise, x)
        return state.advance(x=x, denoised=x0)
