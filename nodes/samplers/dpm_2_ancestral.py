"""sampler.dpm_2_ancestral: DPM-Solver-2 steps to sigma_down plus fresh noise (k-diffusion sample_dpm_2_ancestral)."""
from __future__ import annotations

from typing import ClassVar

import torch

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.state import State, bcast
from .common import NoisySampler, ancestral_step, sde_noise, to_d


@node("sampler.dpm_2_ancestral", version=1)
class Dpm2Ancestral(NoisySampler):
    """Implements ancestral sampling (Ho et al. 2020) with DPM-Solver-2 steps (Lu et al. 2022, Alg. 1) in sigma."""

    order: ClassVar[int] = 2  # eta = 0 is DPM-Solver-2 (k-diffusion sample_dpm_2)
    nfe_per_step: ClassVar[int] = 2  # a step with sigma_down = 0 is an Euler step: 1 evaluation

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """Midpoint step (in log sigma) to sigma_down plus noise; particles with sigma_down = 0 take the
        Euler step and, as in k-diffusion, get no noise."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        down, up = ancestral_step(sigma, sigma_next, self.eta)  # (B,)
        d = to_d(state.x, sigma, x0)  # (B, ...)
        x = state.x + d * bcast(down - sigma, state.x)  # (B, ...) the Euler step
        two = torch.nonzero(down > 0).squeeze(1)  # (T,) particles taking the DPM-Solver-2 step
        if two.numel() > 0:
            s, s_down, x_t = sigma[two], down[two], state.x[two]  # (T,), (T,), (T, ...)
            s_mid = s.log().lerp(s_down.log(), 0.5).exp()  # (T,)
            x_2 = x_t + d[two] * bcast(s_mid - s, x_t)  # (T, ...)
            d_2 = to_d(x_2, s_mid, denoise(x_2, s_mid))  # (T, ...)
            x_t = x_t + d_2 * bcast(s_down - s, x_t)  # (T, ...)
            if self.eta > 0:  # up = 0 for eta = 0
                eps = sde_noise(noise, self.noise, state.particle[two], state.step[two], x_t, s, sigma_next[two])
                x_t = x_t + eps * bcast(up[two] * self.s_noise, x_t)
            x = x.index_copy(0, two, x_t)
        return state.advance(x=x, denoised=x0)
