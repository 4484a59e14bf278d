"""sampler.dpmpp_2m_sde: second-order multistep DPM-Solver++ for the diffusion SDE (k-diffusion sample_dpmpp_2m_sde)."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .common import NoiseKind, NoisySampler, sde_noise


@node("sampler.dpmpp_2m_sde", version=1)
class Dpmpp2MSde(NoisySampler):
    """Implements SDE-DPM-Solver++(2M) (Lu et al. 2022b, Appendix) with k-diffusion's eta and solver types."""

    order: ClassVar[int] = 2  # eta = 0 is DPM-Solver++(2M)
    nfe_per_step: ClassVar[int] = 1
    eta: float = Field(1.0, ge=0, description="1: the reverse SDE; 0: the ODE (DPM-Solver++(2M))")
    solver_type: Literal["midpoint", "heun"] = Field("midpoint", description="the second-order correction's form")
    noise: NoiseKind = Field("brownian", description="'brownian': increments of a Brownian tree (k-diffusion's "
                                                     "default); 'step': fresh normals per step")

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """history = (x0 estimate of the previous step,), zeros until the first step."""
        return super().init(x, sigmas, particle).replace(history=(torch.zeros_like(x),))

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """Exponential-integrator step in t = -log sigma with a first-order correction from the previous
        estimate (none on a particle's first step); a step to sigma = 0 returns the x0 estimate."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        final = sigma_next == 0  # (B,)
        sigma_to = torch.where(final, sigma, sigma_next)  # (B,) keeps the unused update of final particles finite
        t, s = -sigma.log(), -sigma_to.log()  # (B,)
        h = s - t  # (B,)
        eta_h = self.eta * h  # (B,)
        keep = (-h - eta_h).expm1().neg()  # (B,)
        x = bcast(sigma_to / sigma * (-eta_h).exp(), x0) * state.x + bcast(keep, x0) * x0  # (B, ...)
        h_last = t - (-state.sigma_prev.log())  # (B,) the previous step's h
        if self.solver_type == "heun":
            coef = (keep / (-h - eta_h) + 1) * (h / h_last)  # (B,)
        else:
            coef = 0.5 * keep * (h / h_last)  # (B,)
        coef = torch.where((state.step > 0) & ~final, coef, 0.0)  # (B,) no history on a first step
        x = x + bcast(coef, x) * (x0 - state.history[0])  # (B, ...)
        if self.eta > 0 and not bool(final.all()):
            eps = sde_noise(noise, self.noise, state.particle, state.step, x, sigma, sigma_next)  # (B, ...)
            x = x + eps * bcast(sigma_to * (-2 * eta_h).expm1().neg().sqrt() * self.s_noise, x)
        x = torch.where(bcast(final, x), x0, x)  # (B, ...)
        return state.advance(x=x, denoised=x0, history=(x0,))
