"""sampler.deis: DEIS, the exponential integrator with multistep noise extrapolation (Zhang & Chen 2023).

In sigma space the probability-flow ODE is dx/dsigma = eps(x, sigma) with eps = (x - D) / sigma
(VP's rho = sigma_vp / alpha is our sigma). "log-rho" DEIS (tAB-DEIS in rho, diffusers'
DEISMultistepScheduler) extrapolates eps by the Lagrange polynomial in log(sigma) through the
current and p - 1 previous outputs and integrates it exactly over [sigma, sigma']:
    x' = x + sum_j c_j eps_j,    c_j = integral_sigma^sigma' l_j(log s) ds.
With u = log(s / sigma), integral u^k ds = s P_k(u), P_0 = 1, P_1 = u - 1, P_2 = u^2 - 2u + 2, so
every c_j is closed form; measuring logs from sigma keeps the difference well conditioned.

History, newest first: the p - 1 previous eps estimates."""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .vp_common import LOWER_ORDER_FINAL_DOC, LowerOrderFinal, effective_order, past_sigmas


@node("sampler.deis", version=1)
class Deis(Sampler):
    """Implements log-rho multistep DEIS (tAB-DEIS) of Zhang & Chen (2023), as diffusers' DEISMultistepScheduler."""

    order: ClassVar[int] = 2  # the default solver_order
    nfe_per_step: ClassVar[int] = 1
    solver_order: int = Field(2, ge=1, le=3, description="outputs the eps polynomial goes through")
    lower_order_final: LowerOrderFinal = Field("under_15_steps", description=LOWER_ORDER_FINAL_DOC)

    @property
    def step_order(self) -> int:
        """The eps polynomial through solver_order outputs gives order solver_order."""
        return self.solver_order

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """History: the p - 1 previous eps estimates (zeros before the first step)."""
        return super().init(x, sigmas, particle).replace(history=(torch.zeros_like(x),) * (self.solver_order - 1))

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """x' = x + sum_j c_j eps_j with each particle's own order."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        eps = (state.x - x0) / bcast(sigma, x0)  # (B, ...)
        outputs = [eps, *state.history]  # newest first
        order = effective_order(state.step, state.sigmas, self.solver_order, self.lower_order_final)  # (B,)
        nodes = [sigma, *past_sigmas(state, self.solver_order - 1)]  # (B,) each
        coef = deis_coefficients(nodes, sigma_next, order)  # (B, p) float64
        x = state.x + sum(bcast(c.to(x0.dtype), x0) * e for c, e in zip(coef.unbind(1), outputs))  # (B, ...)
        return state.advance(x=x, denoised=x0, history=tuple(outputs[:-1]))


def deis_coefficients(nodes: list[torch.Tensor], sigma_next: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """c (B, p) float64: integrals over [nodes[0], sigma_next] of the Lagrange basis in log(sigma) on
    nodes[:o] for each particle's order o (B,); entries j >= o are 0."""
    f64 = torch.float64
    s = nodes[0].to(f64)  # (B,)
    t = sigma_next.to(f64)  # (B,)
    u_t = torch.log(t / s)  # (B,) -inf at sigma_next = 0, where s P_k(u) -> 0
    out = torch.zeros(s.shape[0], len(nodes), dtype=f64, device=s.device)
    for o in range(1, len(nodes) + 1):
        u = [torch.log(n.to(f64) / s) for n in nodes[:o]]  # (B,) node positions, u[0] = 0; warm-up
        # particles read repeated (clamped) nodes here: their 0/0 is never selected
        for j in range(o):
            others = u[:j] + u[j + 1:]
            denom = torch.ones_like(s)
            for c in others:
                denom = denom * (u[j] - c)
            c_j = antiderivative(t, u_t, others) - antiderivative(s, torch.zeros_like(s), others)
            out[:, j] = torch.where(order == o, c_j / denom, out[:, j])
    return out


def antiderivative(tau: torch.Tensor, u: torch.Tensor, roots: list[torch.Tensor]) -> torch.Tensor:
    """tau * Q(u) (B,) with d/dtau [tau Q(log(tau / sigma))] = prod_c (u - c), for up to two roots; 0 at tau = 0."""
    p1, p2 = u - 1, u ** 2 - 2 * u + 2  # integral u^k ds = s P_k(u)
    if not roots:
        q = torch.ones_like(u)
    elif len(roots) == 1:
        q = p1 - roots[0]
    else:
        q = p2 - (roots[0] + roots[1]) * p1 + roots[0] * roots[1]
    return torch.where(tau > 0, tau * q, 0.0)
