"""sampler.dpm_2: DPM-Solver-2 midpoint steps in log sigma inside Karras et al.'s Algorithm 2, with
optional EDM churn (k-diffusion sample_dpm_2)."""
from __future__ import annotations

from typing import ClassVar


from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.state import State, bcast
from .common import ChurnSampler, to_d


@node("sampler.dpm_2", version=1)
class Dpm2(ChurnSampler):
    """Implements a sampler inspired by DPM-Solver-2 (Lu et al. 2022) and Algorithm 2 from Karras et al. (2022)."""

    order: ClassVar[int] = 2
    nfe_per_step: ClassVar[int] = 2  # a step to sigma = 0 is an Euler step: 1 evaluation

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """A midpoint step, the midpoint taken in log sigma; Euler for particles stepping to sigma = 0."""
        x, sigma_hat, sigma_next, x0, d, x_next, mid = self.euler_predictor(denoise, state, noise)  # mid: (M,)
        if mid.numel() > 0:
            s_hat, s_next = sigma_hat[mid], sigma_next[mid]  # (M,)
            s_mid = s_hat.log().lerp(s_next.log(), 0.5).exp()  # (M,) geometric midpoint
            x_m = x[mid]  # (M, ...)
            x_2 = x_m + d[mid] * bcast(s_mid - s_hat, x_m)  # (M, ...)
            d_2 = to_d(x_2, s_mid, denoise(x_2, s_mid))  # (M, ...)
            x_next = x_next.index_copy(0, mid, x_m + d_2 * bcast(s_next - s_hat, x_m))  # (B, ...)
        return state.advance(x=x_next, denoised=x0)
