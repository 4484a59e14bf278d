"""sampler.pndm: pseudo numerical methods (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion
Models on Manifolds"): the pseudo linear multistep method (PLMS) with its warm start.

The paper's transfer phi(x_t, eps, t, t') is DDIM's step, in sigma space x' = x + (sigma' - sigma) eps
with eps = (x - D) / sigma: linear in eps, so a combination of noise estimates pushed through phi is
a combination of slopes. PLMS (eq. 12) feeds phi the 4th-order Adams-Bashforth combination
(55 e_0 - 59 e_1 + 37 e_2 - 9 e_3) / 24 of the last four estimates, each taken at a step's start.

Warm start ('warmup'):
- 'prk' (the paper's F-PNDM, diffusers' PNDMScheduler default): the first 3 steps are pseudo
  Runge-Kutta steps (eq. 13), classical RK4 through phi with the midpoint level
  sigma_m = sqrt(sigma sigma') (the midpoint in log-SNR; diffusers takes the timestep halfway between,
  a level that depends on its beta table): 4 denoiser calls each, then PLMS with a full history.
- 'plms' (diffusers' skip_prk_steps): a pseudo improved-Euler (Heun) first step, 2 calls, then
  Adams-Bashforth of orders 2, 3, 4 as the history fills (each estimate from a step's start).
A warm-up step to sigma = 0 is x = D (one call); PLMS steps to 0 keep the combination (diffusers).

Order 2 on non-uniform grids such as Karras' (the weights are those of uniform steps, as iPNDM's;
see sampler.ipndm); 4 on steps uniform in sigma."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .common import to_d
from .ipndm import AB

Warmup = Literal["prk", "plms"]
WARMUP_STEPS = {"prk": 3, "plms": 1}  # steps taken by the warm start
WARMUP_NFE = {"prk": 4, "plms": 2}  # denoiser calls of each warm-up step


@node("sampler.pndm", version=1)
class Pndm(Sampler):
    """Implements PNDM (Liu et al. 2022): PLMS, eq. 12, after a pseudo Runge-Kutta (eq. 13) or improved-Euler start."""

    order: ClassVar[int] = 2  # on non-uniform grids (module docstring)
    nfe_per_step: ClassVar[int] = 4  # the default 'prk' warm-up steps; PLMS steps take 1 (nfe_at)
    warmup: Warmup = Field("prk", description="'prk': 3 pseudo Runge-Kutta steps (4 calls each; the paper, "
                                              "diffusers' default); 'plms': one pseudo improved-Euler step "
                                              "(2 calls; diffusers' skip_prk_steps)")

    @property
    def step_nfe(self) -> int:
        """The most a step costs: a warm-up step (nfe_at gives each step's cost)."""
        return WARMUP_NFE[self.warmup]

    def nfe_at(self, step: int) -> int:
        """Warm-up steps cost 4 ('prk') or 2 ('plms') calls, PLMS steps 1."""
        return WARMUP_NFE[self.warmup] if step < WARMUP_STEPS[self.warmup] else 1

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """History: the noise estimates at the last 3 steps' starts, newest first (zeros until computed)."""
        return super().init(x, sigmas, particle).replace(history=tuple(torch.zeros_like(x) for _ in range(3)))

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """PLMS x' = x + (sigma' - sigma) AB(e) per particle; warm-up particles take the warm-start step."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        e = to_d(state.x, sigma, x0)  # (B, ...) eps at the step's start
        rows = torch.tensor(AB, dtype=state.x.dtype, device=state.x.device)  # (4, 4)
        w = rows[state.step.clamp(max=3)]  # (B, 4) order min(step + 1, 4)
        slope = bcast(w[:, 0], e) * e  # (B, ...)
        for j, e_j in enumerate(state.history, start=1):
            slope = slope + bcast(w[:, j], e_j) * e_j  # (B, ...)
        x = state.x + bcast(sigma_next - sigma, e) * slope  # (B, ...)
        warm = state.step < WARMUP_STEPS[self.warmup]  # (B,)
        x = torch.where(bcast(warm & (sigma_next == 0), x), x0, x)  # (B, ...) a warm-up step to 0 is x = D
        idx = torch.nonzero(warm & (sigma_next > 0)).squeeze(1)  # (K,)
        if idx.numel():
            start = pseudo_runge_kutta if self.warmup == "prk" else improved_euler
            x = x.index_copy(0, idx, start(denoise, state.x[idx], e[idx], sigma[idx], sigma_next[idx]))
        return state.advance(x=x, denoised=x0, history=(e, *state.history[:-1]))



def improved_euler(denoise: Denoiser, x: torch.Tensor, e1: torch.Tensor, sigma: torch.Tensor,
                   sigma_next: torch.Tensor) -> torch.Tensor:
    """Pseudo improved-Euler step (the paper's S-PNDM start; diffusers' skip_prk_steps first step); 1 call."""
    full = bcast(sigma_next - sigma, x)  # (K, 1, ...)
    x1 = x + full * e1  # (K, ...)
    e2 = to_d(x1, sigma_next, denoise(x1, sigma_next))  # (K, ...)
    return x + full * ((e1 + e2) / 2)


def pseudo_runge_kutta(denoise: Denoiser, x: torch.Tensor, e1: torch.Tensor, sigma: torch.Tensor,
                       sigma_next: torch.Tensor) -> torch.Tensor:
    """Pseudo Runge-Kutta step (eq. 13): RK4 through phi, midpoint sigma_m = sqrt(sigma sigma'); 3 calls."""
    mid = (sigma * sigma_next).sqrt()  # (K,)
    half, full = bcast(mid - sigma, x), bcast(sigma_next - sigma, x)  # (K, 1, ...)
    x1 = x + half * e1  # (K, ...)
    e2 = to_d(x1, mid, denoise(x1, mid))  # (K, ...)
    x2 = x + half * e2  # (K, ...)
    e3 = to_d(x2, mid, denoise(x2, mid))  # (K, ...)
    x3 = x + full * e3  # (K, ...)
    e4 = to_d(x3, sigma_next, denoise(x3, sigma_next))  # (K, ...)
    return x + full * ((e1 + 2 * e2 + 2 * e3 + e4) / 6)
