"""sampler.er_sde: ER-SDE-Solvers 1-3 (Cui et al. 2023, "Elucidating the solution space of extended
reverse-time SDE for diffusion models"), VE form with a data-prediction denoiser (ComfyUI's sample_er_sde).

With a noise-scale function f (the paper's phi, Appendix A.8) the exact solution of the VE ER SDE from
sigma to sigma' is x' = r x + f(sigma') int_{sigma'}^{sigma} f'(l) / f(l)^2 D(l) dl + sqrt(sigma'^2 -
sigma^2 r^2) z with r = f(sigma') / f(sigma). Taylor-expanding D in sigma around sigma and integrating by
parts gives the solver of order k:
    x' = r x + (1 - r) D + (dt + f(sigma') I_1) D' + (dt^2 / 2 + f(sigma') I_2) D'' + sqrt(...) z,
dt = sigma' - sigma, I_1 = int_{sigma'}^{sigma} dl / f(l), I_2 = int_{sigma'}^{sigma} (l - sigma) / f(l) dl,
with D' and D'' the backward divided differences of the last estimates (D'' = 2 D[i, i-1, i-2]).
The integrals use 16-point Gauss-Legendre quadrature in log(sigma) (ComfyUI: a 200-point Riemann sum).

f = sigma is the probability-flow ODE (no noise), f = sigma^2 the reverse SDE; the default 'sde_5'
f = sigma (e^(sigma^0.3) + 10) is the paper's and ComfyUI's choice. Steps start with lower orders
(step i uses min(i + 1, solver_order)); a step to sigma = 0 returns D. `order` is that of the 'ode'
limit, measured in test_sde_distribution.py: the expansion uses (l - sigma)^2 D[i, i-1, i-2] where the
interpolating quadratic has (l - sigma)(l - sigma_prev), so solver_order 3 converges at rate 2."""
from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .common import NoiseKind, sde_noise
from .vp_common import past_sigmas

NoiseScale = Literal["sde_5", "sde_4", "sde_3", "sde_2", "sde_1", "sde", "ode"]
QUADRATURE_NODES = 16


def noise_scale(kind: NoiseScale, s: torch.Tensor) -> torch.Tensor:
    """The paper's noise-scale functions f(sigma) (Appendix A.8; the reference code's customized_func), same shape."""
    if kind == "ode":
        return s
    if kind == "sde":
        return s ** 2
    if kind == "sde_1":
        return s * (torch.exp(-1 / s) + 10)
    if kind == "sde_2":
        return s ** 1.5
    if kind == "sde_3":
        return s ** 2.5
    if kind == "sde_4":
        return s ** 0.9 * torch.log10(1 + 100 * s ** 1.5)
    return s * (torch.exp(s ** 0.3) + 10)


def er_integrals(kind: NoiseScale, sigma: torch.Tensor, sigma_next: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """I_1 = int dl / f(l) and I_2 = int (l - sigma) / f(l) dl over [sigma_next, sigma] (B,) each, float64,
    by Gauss-Legendre quadrature in u = log(l) (dl = l du); sigma_next > 0."""
    f64 = torch.float64
    xi, w = (torch.as_tensor(a, dtype=f64, device=sigma.device)
             for a in np.polynomial.legendre.leggauss(QUADRATURE_NODES))  # (Q,) each
    lo, hi = sigma_next.to(f64).log(), sigma.to(f64).log()  # (B,)
    u = (lo + hi)[:, None] / 2 + (hi - lo)[:, None] / 2 * xi  # (B, Q)
    lam = u.exp()  # (B, Q)
    weight = w * (hi - lo)[:, None] / 2 * lam / noise_scale(kind, lam)  # (B, Q) du-weights times l / f(l)
    return weight.sum(1), (weight * (lam - sigma.to(f64)[:, None])).sum(1)


@node("sampler.er_sde", version=1)
class ErSde(Sampler):
    """Implements ER-SDE-Solver-1/2/3 (Cui et al. 2023, VE data prediction) with the paper's noise-scale functions."""

    order: ClassVar[int] = 2  # of the 'ode' limit for solver_order 2 and 3 (module docstring)
    nfe_per_step: ClassVar[int] = 1
    stochastic: ClassVar[bool] = True
    solver_order: int = Field(3, ge=1, le=3, description="Taylor terms of D used (ComfyUI's max_stage)")
    noise_scale: NoiseScale = Field("sde_5", description="noise-scale function f: 'ode' f = sigma (no noise), "
                                                         "'sde' f = sigma^2 (reverse SDE), 'sde_1'-'sde_5' the "
                                                         "paper's (Appendix A.8; 'sde_5' its and ComfyUI's default)")
    s_noise: float = Field(1.0, ge=0, description="scale of the added noise")
    noise: NoiseKind = Field("step", description="'step': fresh normals per step (ComfyUI's default); "
                                                 "'brownian': increments of a Brownian tree")

    @property
    def step_order(self) -> int:
        """Order of the 'ode' limit: 1 for solver_order 1, else 2 (module docstring)."""
        return min(self.solver_order, 2)

    @property
    def draws_noise(self) -> bool:
        """'ode' adds no noise (sigma'^2 - sigma^2 r^2 = 0), nor does s_noise = 0."""
        return self.noise_scale != "ode" and self.s_noise > 0

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """History: (D of the last step, its divided difference D'), as far as solver_order needs them."""
        return super().init(x, sigmas, particle).replace(history=(torch.zeros_like(x),) * (self.solver_order - 1))

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """x' = r x + (1 - r) D + Taylor terms of order min(step + 1, solver_order) + noise; x = D at sigma 0."""
        sigma = state.sigma  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        final = state.sigma_next == 0  # (B,)
        to = torch.where(final, sigma, state.sigma_next)  # (B,) keeps the unused update of final rows finite
        f_to = noise_scale(self.noise_scale, to.double())  # (B,)
        r = (f_to / noise_scale(self.noise_scale, sigma.double())).to(x0.dtype)  # (B,)
        x = bcast(r, x0) * state.x + bcast(1 - r, x0) * x0  # (B, ...)
        history: tuple[torch.Tensor, ...] = ()
        if self.solver_order >= 2:
            x, history = self.taylor_terms(state, x, x0, to, f_to)
        if self.draws_noise and not bool(final.all()):
            z = sde_noise(noise, self.noise, state.particle, state.step, x, sigma, state.sigma_next)  # (B, ...)
            std = (to ** 2 - sigma ** 2 * r ** 2).clamp(min=0).sqrt() * self.s_noise  # (B,)
            x = x + z * bcast(std, x)
        x = torch.where(bcast(final, x), x0, x)  # (B, ...)
        return state.advance(x=x, denoised=x0, history=history)

    def taylor_terms(self, state: State, x: torch.Tensor, x0: torch.Tensor, to: torch.Tensor,
                     f_to: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Add the D' (and D'') terms where each particle's order allows; the new history (D, D')."""
        sigma = state.sigma  # (B,)
        order = (state.step + 1).clamp(max=self.solver_order)  # (B,)
        i1, i2 = er_integrals(self.noise_scale, sigma, to)  # (B,) float64 each
        dt = (to - sigma).double()  # (B,)
        back = past_sigmas(state, self.solver_order - 1)  # sigma_{i-1}, sigma_{i-2} (B,) each
        gap1 = torch.where(order >= 2, sigma - back[0], 1.0)  # (B,) 1 where unused (0 / 0 otherwise)
        d1 = (x0 - state.history[0]) / bcast(gap1, x0)  # (B, ...) D[i, i-1]
        c1 = torch.where(order >= 2, dt + f_to * i1, 0.0).to(x0.dtype)  # (B,)
        x = x + bcast(c1, x) * d1
        if self.solver_order < 3:
            return x, (x0,)
        gap2 = torch.where(order >= 3, sigma - back[1], 1.0)  # (B,)
        d2 = 2 * (d1 - state.history[1]) / bcast(gap2, x0)  # (B, ...) 2 D[i, i-1, i-2] ~ D''
        c2 = torch.where(order >= 3, dt ** 2 / 2 + f_to * i2, 0.0).to(x0.dtype)  # (B,)
        return x + bcast(c2, x) * d2, (x0, d1)
