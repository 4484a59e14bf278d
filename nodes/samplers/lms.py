"""sampler.lms: linear multistep (Adams-Bashforth) in sigma on any grid (k-diffusion sample_lms).

The coefficient of the derivative from j steps back is the integral over [sigma_i, sigma_i+1]
of its Lagrange basis polynomial through the last k levels. k-diffusion integrates it with
scipy's quad; here Gauss-Legendre quadrature with `solver_order` nodes, exact for polynomials
of degree < 2 * solver_order, so the coefficients are exact up to round-off, per particle.

Like k-diffusion it starts with lower orders (step i uses min(i + 1, solver_order) derivatives),
and that Euler first step caps the asymptotic rate at 2; its error constant is tiny (paths are
nearly straight at sigma_max), so solver_order k shows rate k up to a few hundred steps."""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .common import to_d


@node("sampler.lms", version=1)
class Lms(Sampler):
    """Implements linear multistep steps in sigma (Adams-Bashforth on a variable grid; k-diffusion sample_lms)."""

    order: ClassVar[int] = 4  # of the default solver_order, before the start's rate-2 floor (module docstring)
    nfe_per_step: ClassVar[int] = 1
    solver_order: int = Field(4, ge=1, le=8, description="derivatives used per step (k-diffusion's 'order')")

    @property
    def step_order(self) -> int:
        """solver_order (up to a few hundred steps; see the module docstring)."""
        return self.solver_order

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """History: the last solver_order - 1 derivatives, newest first (zeros until computed)."""
        state = super().init(x, sigmas, particle)
        return state.replace(history=tuple(torch.zeros_like(x) for _ in range(self.solver_order - 1)))

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """x += sum_j c_j d_{i-j}, with order min(step + 1, solver_order) per particle."""
        x0 = denoise(state.x, state.sigma)  # (B, ...)
        d = to_d(state.x, state.sigma, x0)  # (B, ...)
        coeffs = lms_coefficients(state.sigmas, state.step, self.solver_order).to(state.x.dtype)  # (B, K)
        x = state.x + bcast(coeffs[:, 0], d) * d  # (B, ...)
        for j, d_j in enumerate(state.history, start=1):
            x = x + bcast(coeffs[:, j], d_j) * d_j  # (B, ...)
        return state.advance(x=x, denoised=x0, history=(d, *state.history[:-1]) if state.history else ())


def lms_coefficients(sigmas: torch.Tensor, step: torch.Tensor, order: int) -> torch.Tensor:
    """(B, order) float64: c_j = integral over [sigma_i, sigma_i+1] of the Lagrange basis polynomial
    of level i - j through levels i, ..., i - k + 1 (k = min(i + 1, order)); 0 for j >= k."""
    sig = sigmas.to(torch.float64)  # (S+1,)
    k = (step + 1).clamp(max=order)  # (B,) orders in use
    lag = torch.arange(order, device=step.device)  # (K,)
    nodes = sig[(step[:, None] - lag).clamp(min=0)]  # (B, K) levels i, i-1, ...
    lo, hi = sig[step], sig[step + 1]  # (B,)
    xi, w = (torch.as_tensor(a, dtype=torch.float64, device=sig.device) for a in np.polynomial.legendre.leggauss(order))
    tau = (lo + hi)[:, None] / 2 + (hi - lo)[:, None] / 2 * xi  # (B, Q) quadrature points
    num = tau[:, None, None, :] - nodes[:, None, :, None]  # (B, 1, K, Q) tau - t_m
    den = nodes[:, :, None] - nodes[:, None, :]  # (B, K, K) t_j - t_m
    used = (lag[None, :] < k[:, None])  # (B, K)
    pair = used[:, None, :] & (lag[:, None] != lag[None, :])[None]  # (B, K, K): m used and m != j
    basis = torch.where(pair[..., None], num / den[..., None], 1.0).prod(dim=2)  # (B, K, Q)
    integral = (basis * w).sum(-1) * ((hi - lo) / 2)[:, None]  # (B, K)
    return torch.where(used, integral, 0.0)
