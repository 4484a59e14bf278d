"""sampler.dpmpp_3m: DPM-Solver++(3M), the data-prediction multistep solver with a second-difference
term (k-diffusion sample_dpmpp_3m_sde with eta = 0; diffusers' DPMSolverMultistep, solver_order 3).

Its order is 2, not 3, as every reference writes it: D2 = (D1_0 - D1_1) / (r0 + r1) estimates
h^2 D''/2, but the exact Taylor term is -phi_3 h^2 D'' (phi_3 = phi_2 / h - 1/2), so the update
carries half of it and is not exact for an x0 estimate quadratic in lambda. We keep the formula
(parity with k-diffusion, ComfyUI and diffusers) and declare the order it has; it still beats
DPM-Solver++(2M) at equal NFE in the benchmarks (a smaller error constant)."""
from __future__ import annotations

from typing import ClassVar

import torch

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast


@node("sampler.dpmpp_3m", version=1)
class Dpmpp3M(Sampler):
    """Implements DPM-Solver++(3M) (Lu et al. 2022b, Sec. 3.4 / App. B) on sigmas = exp(-lambda)."""

    order: ClassVar[int] = 2  # measured and derived; see the module docstring
    nfe_per_step: ClassVar[int] = 1

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """History: the x0 estimates of the previous two steps, newest first (zeros before them)."""
        return super().init(x, sigmas, particle).replace(history=(torch.zeros_like(x), torch.zeros_like(x)))

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """One x0 estimate on step 0 (DPM-Solver++(1)), two on step 1 (2M), three after; x = x0 at sigma 0."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        x0_1, x0_2 = state.history  # (B, ...) each
        lam = -state.sigmas.log()  # (S+1,) lambda of every level
        lam_1, lam_2 = lam[(state.step - 1).clamp(min=0)], lam[(state.step - 2).clamp(min=0)]  # (B,)
        h = lam[state.step + 1] - lam[state.step]  # (B,)
        live = sigma_next > 0  # (B,)
        h = torch.where(live, h, 1.0)  # (B,) finite stand-in where sigma_next = 0 (x0 is taken there)
        r0 = (lam[state.step] - lam_1) / h  # (B,) h_1 / h
        r1 = (lam_1 - lam_2) / h  # (B,) h_2 / h
        phi_2 = (-h).expm1() / h + 1  # (B,)
        phi_3 = phi_2 / h - 0.5  # (B,)
        use_1, use_2 = live & (state.step >= 1), live & (state.step >= 2)  # (B,)
        d1_0 = (x0 - x0_1) / bcast(torch.where(use_1, r0, 1.0), x0)  # (B, ...)
        d1_1 = (x0_1 - x0_2) / bcast(torch.where(use_2, r1, 1.0), x0)  # (B, ...)
        both = bcast(torch.where(use_2, r0 + r1, 1.0), x0)  # (B, 1, ...)
        third = d1_0 + (d1_0 - d1_1) * bcast(r0, x0) / both  # (B, ...) d1 of the 3M step
        corr = torch.where(bcast(use_2, x0), bcast(phi_2, x0) * third - bcast(phi_3, x0) * (d1_0 - d1_1) / both,
                           bcast(phi_2, x0) * d1_0)  # (B, ...)
        x = bcast((-h).exp(), x0) * state.x + bcast(-(-h).expm1(), x0) * x0 \
            + torch.where(bcast(use_1, x0), corr, 0.0)  # (B, ...)
        x = torch.where(bcast(live, x), x, x0)  # (B, ...)
        return state.advance(x=x, denoised=x0, history=(x0, x0_1))
