"""sampler.dpmpp_2m: DPM-Solver++(2M), the data-prediction multistep solver (k-diffusion sample_dpmpp_2m)."""
from __future__ import annotations

from typing import ClassVar

import torch

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .common import renoised


@node("sampler.dpmpp_2m", version=1)
class Dpmpp2M(Sampler):
    """Implements DPM-Solver++(2M), Algorithm 2 of Lu et al. (2022b), on sigmas = exp(-lambda)."""

    order: ClassVar[int] = 2
    nfe_per_step: ClassVar[int] = 1
    supports_renoise: ClassVar[bool] = True  # CFG++ as ComfyUI's sample_dpmpp_2m_cfg_pp: history holds x0_r

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """History: the previous step's x0 estimate (zeros before the first step)."""
        return super().init(x, sigmas, particle).replace(history=(torch.zeros_like(x),))

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """First step and steps to sigma = 0 are first order (DPM-Solver++(1)), as in k-diffusion."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0, x0_r = denoise.estimates(state.x, sigma)  # (B, ...) each
        x0_d, _ = dpmpp_2m_estimate(state, x0, state.history[0])  # (B, ...)
        x = dpmpp_step(state, x0_d)  # (B, ...)
        x = renoised(x, x0, x0_r, sigma, sigma_next)  # (B, ...)
        return state.advance(x=x, denoised=x0, history=(x0_r,))


def dpmpp_2m_estimate(state: State, x0: torch.Tensor, x0_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DPM-Solver++(2M)'s extrapolated estimate D0 + D1 / 2 (B, ...) from x0 and the previous x0_prev, and
    `second` (B,): rows taking the second-order update (not the first step, nor a step to sigma 0)."""
    sigma, sigma_next, sigma_prev = state.sigma, state.sigma_next, state.sigma_prev  # (B,)
    t, t_next = -sigma.log(), -sigma_next.log()  # (B,) lambda; t_next = inf at sigma 0
    second = (state.step > 0) & (sigma_next > 0)  # (B,)
    h_last = t + sigma_prev.log()  # (B,) lambda - lambda_prev; 0 on step 0
    k = torch.where(second, (t_next - t) / (2 * h_last), 0.0)  # (B,) 1 / (2 r) with r = h_last / h
    return bcast(1 + k, x0) * x0 - bcast(k, x0) * x0_prev, second


def dpmpp_step(state: State, x0_d: torch.Tensor) -> torch.Tensor:
    """The data-prediction exponential-integrator step x' = (sigma'/sigma) x - (e^-h - 1) x0_d (B, ...)."""
    sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
    h = sigma.log() - sigma_next.log()  # (B,) lambda_next - lambda
    return bcast(sigma_next / sigma, x0_d) * state.x - bcast((-h).expm1(), x0_d) * x0_d  # (B, ...)
