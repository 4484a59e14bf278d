"""sampler.dpmpp_2s: DPM-Solver++(2S), the singlestep data-prediction solver (k-diffusion
sample_dpmpp_2s_ancestral with eta = 0)."""
from __future__ import annotations

from typing import ClassVar

import torch

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.state import State, bcast


@node("sampler.dpmpp_2s", version=1)
class Dpmpp2S(Sampler):
    """Implements DPM-Solver++(2S), Algorithm 1 of Lu et al. (2022b) with r = 1/2, on sigmas = exp(-lambda)."""

    order: ClassVar[int] = 2
    nfe_per_step: ClassVar[int] = 2  # a step to sigma = 0 is an Euler step (x = x0): 1 evaluation

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """One 2S step through the log-sigma midpoint; particles stepping to sigma = 0 take x = x0."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        x = x0.clone()  # (B, ...) the Euler step to sigma = 0 is x0 itself
        go = torch.nonzero(sigma_next > 0).squeeze(1)  # (G,)
        if go.numel() > 0:
            x_g, x0_g, s_g, s_next = state.x[go], x0[go], sigma[go], sigma_next[go]  # (G, ...), (G,)
            h = s_g.log() - s_next.log()  # (G,) lambda_next - lambda
            s_mid = (s_g.log() - h / 2).exp()  # (G,)
            x_2 = bcast(s_mid / s_g, x_g) * x_g - bcast((-h / 2).expm1(), x_g) * x0_g  # (G, ...)
            x0_2 = denoise(x_2, s_mid)  # (G, ...)
            x = x.index_copy(0, go, bcast(s_next / s_g, x_g) * x_g - bcast((-h).expm1(), x_g) * x0_2)
        return state.advance(x=x, denoised=x0)
