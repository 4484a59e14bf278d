"""sampler.heun: second-order (trapezoidal) steps of the probability-flow ODE, with optional EDM
churn (k-diffusion sample_heun)."""
from __future__ import annotations

from typing import ClassVar


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
        x, sigma_hat, sigma_next, x0, d, x_next, heun = self.euler_predictor(denoise, state, noise)  # heun: (H,)
        if heun.numel() > 0:  # one batched call for these, none at sigma 0
            x_2, sigma_2 = x_next[heun], sigma_next[heun]  # (H, ...), (H,)
            d_2 = to_d(x_2, sigma_2, denoise(x_2, sigma_2))  # (H, ...)
            dt = bcast(sigma_2 - sigma_hat[heun], x_2)  # (H, 1, ...)
            x_next = x_next.index_copy(0, heun, x[heun] + (d[heun] + d_2) / 2 * dt)  # (B, ...)
        return state.advance(x=x_next, denoised=x0)
