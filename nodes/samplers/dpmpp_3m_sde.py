"""sampler.dpmpp_3m_sde: third-order multistep DPM-Solver++ for the diffusion SDE (k-diffusion sample_dpmpp_3m_sde)."""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .common import NoiseKind, NoisySampler, sde_noise


@node("sampler.dpmpp_3m_sde", version=1)
class Dpmpp3MSde(NoisySampler):
    """Implements SDE-DPM-Solver++(3M) (Lu et al. 2022b) with k-diffusion's eta: multistep, 1, 2, then 3 estimates."""

    order: ClassVar[int] = 2  # eta = 0 is DPM-Solver++(3M): order 2, see nodes/samplers/dpmpp_3m.py
    nfe_per_step: ClassVar[int] = 1
    eta: float = Field(1.0, ge=0, description="1: the reverse SDE; 0: the ODE (DPM-Solver++(3M))")
    noise: NoiseKind = Field("brownian", description="'brownian': increments of a Brownian tree (k-diffusion's "
                                                     "default); 'step': fresh normals per step")

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """history = (x0 estimates of the previous two steps), zeros until they exist."""
        return super().init(x, sigmas, particle).replace(history=(torch.zeros_like(x), torch.zeros_like(x)))

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """Exponential-integrator step in t = -log sigma with first and second differences of past
        estimates (as many as the particle has); a step to sigma = 0 returns the x0 estimate."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        x0_1, x0_2 = state.history  # (B, ...) the previous two estimates
        final = sigma_next == 0  # (B,)
        sigma_to = torch.where(final, sigma, sigma_next)  # (B,) keeps the unused update of final particles finite
        log_sigmas = state.sigmas.log()  # (S+1,)
        t, s = -sigma.log(), -sigma_to.log()  # (B,)
        h = s - t  # (B,)
        h_1 = t + log_sigmas[(state.step - 1).clamp(min=0)]  # (B,) the previous step's h
        h_2 = -log_sigmas[(state.step - 1).clamp(min=0)] + log_sigmas[(state.step - 2).clamp(min=0)]  # (B,)
        h_eta = h * (self.eta + 1)  # (B,)
        x = bcast((-h_eta).exp(), x0) * state.x + bcast((-h_eta).expm1().neg(), x0) * x0  # (B, ...)
        phi_2 = (-h_eta).expm1() / h_eta + 1  # (B,)
        phi_3 = phi_2 / h_eta - 0.5  # (B,)
        r0, r1 = h_1 / h, h_2 / h  # (B,)
        d1_0 = (x0 - x0_1) / bcast(r0, x0)  # (B, ...)
        d1_1 = (x0_1 - x0_2) / bcast(r1, x0)  # (B, ...)
        d1 = d1_0 + (d1_0 - d1_1) * bcast(r0 / (r0 + r1), x0)  # (B, ...)
        d2 = (d1_0 - d1_1) / bcast(r0 + r1, x0)  # (B, ...)
        third = bcast(phi_2, x0) * d1 - bcast(phi_3, x0) * d2  # (B, ...)
        second = bcast(phi_2, x0) * d1_0  # (B, ...)
        live = ~final  # (B,)
        x = x + torch.where(bcast(live & (state.step >= 2), x), third,
                            torch.where(bcast(live & (state.step == 1), x), second, 0.0))  # (B, ...)
        if self.eta > 0 and not bool(final.all()):
            eps = sde_noise(noise, self.noise, state.particle, state.step, x, sigma, sigma_next)  # (B, ...)
            x = x + eps * bcast(sigma_to * (-2 * h * self.eta).expm1().neg().sqrt() * self.s_noise, x)
        x = torch.where(bcast(final, x), x0, x)  # (B, ...)
        return state.advance(x=x, denoised=x0, history=(x0, x0_1))
