"""sampler.heun: second-order (trapezoidal) steps of the probability-flow ODE, with optional EDM
churn (k-diffusion sample_heun)."""
from __future__ import annotations

from typing import ClassVar

import torch

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.state import State, bcast
from .common import ChurnSampler, to_d


@node("sampler.heun", version=2)
class Heun(ChurnSampler):
    """Implements Algorithm 2 (Heun steps) from Karras et al. (2022), churn included (s_churn > 0)."""

    order: ClassVar[int] = 2
    nfe_per_step: ClassVar[int] = 2  # a step to sigma = 0 is an Euler step: 1 evaluation

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """One Heun step; particles stepping to sigma = 0 take the Euler step, as in Algorithm 2."""
        x, sigma_hat = self.churn(state, noise)  # (B, ...), (B,)
        sigma_next = state.sigma_next  # (B,)
        x0 = denoise(x, sigma_hat)  # (B, ...)
        d = to_d(x, sigma_hat, x0)  # (B, ...)
        dt = bcast(sigma_next - sigma_hat, x)  # (B, 1, ...)
        x_next = x + d * dt  # (B, ...) the Euler step, also the Heun predictor
        heun = torch.nonzero(sigma_next > 0).squeeze(1)  # (H,) one batched call for these, none at sigma 0
        if heun.numel() > 0:
            x_2, sigma_2 = x_next[heun], sigma_next[heun]  # (H, ...), (H,)
            d_2 = to_d(x_2, sigma_2, denoise(x_2, sigma_2))  # (H, ...)
            x_next = x_next.index_copy(0, heun, x[heun] + (d[heun] + d_2) / 2 * dt[heun])  # (B, ...)
        return state.advance(x=x_next, denoised=x0)
