"""Empirical model statistics (EMS) of DPM-Solver-v3 (Zheng et al. 2023) and the integrals of its update.

Sigma space: y = x0 + sigma eps, lambda = -log(sigma). The probability-flow ODE is dy/dlambda = D - y.
DPM-Solver-v3 writes the network term N = y - D as l y + f (l: its linear part) and assumes
df/dlambda ~ s f + b; then g = e^{-int_a s} f - int_a e^{-int_a s} b is nearly constant in lambda.
Within a step from lambda = a to t (ell(r) = int_a^r l, sig(r) = int_a^r s, beta(r) = int_a^r e^{-sig} b):

    y_t = e^{-ell(t)} y_a - int_a^t e^{ell(r) + sig(r) - ell(t)} [g(r) + beta(r)] dr,

and g is a polynomial in (r - a) fitted to the g of the step's points. l, s, b live on a lambda grid
and are piecewise linear between its nodes (constant beyond it), so ell and sig are closed-form
(exact trapezoids) and every other integral is Gauss-Legendre on pieces that never cross a grid
node and are at most MAX_PIECE long: exact to round-off, unlike the authors' trapezoids on the
grid (which also round every step to a grid node; we use the schedule's lambdas as they are)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...graph.errors import NodeError

GL_NODES = 8  # Gauss-Legendre nodes per piece: exact for polynomials of degree 15
MAX_PIECE = 0.25  # longest piece in lambda; e^u over 0.25 needs far fewer nodes than 8
F64 = torch.float64


@dataclass(frozen=True)
class ModelStatistics:
    """DPM-Solver-v3's EMS l, s, b (N+1, *shape) on an ascending lambda grid (N+1,), float64 on the CPU."""

    lambdas: torch.Tensor  # (N+1,)
    l: torch.Tensor  # (N+1, *shape)
    s: torch.Tensor  # (N+1, *shape)
    b: torch.Tensor  # (N+1, *shape)

    def __post_init__(self) -> None:
        lam = self.lambdas
        if lam.ndim != 1 or lam.numel() < 2 or not bool((lam[1:] > lam[:-1]).all()):
            raise NodeError(f"ModelStatistics.lambdas must be a strictly ascending 1-D grid of >= 2 points, "
                            f"got shape {tuple(lam.shape)}")
        for name in ("l", "s", "b"):
            v = getattr(self, name)
            if v.shape[:1] != lam.shape or not bool(torch.isfinite(v).all()):
                raise NodeError(f"ModelStatistics.{name} must be finite with leading dim {lam.numel()} "
                                f"(one row per grid lambda), got shape {tuple(v.shape)}")
            object.__setattr__(self, name, v.detach().to(F64).cpu().contiguous())
        object.__setattr__(self, "lambdas", lam.detach().to(F64).cpu().contiguous())

    @classmethod
    def neutral(cls) -> ModelStatistics:
        """l = 1, s = 0, b = 0 (scalars broadcast over any sample shape): DPM-Solver-v3 without statistics."""
        lam = torch.tensor([-1.0, 1.0], dtype=F64)
        return cls(lam, torch.ones(2, dtype=F64), torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64))

    def cache_encode(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"lambdas": self.lambdas, "l": self.l, "s": self.s, "b": self.b}, {}

    @classmethod
    def cache_decode(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> ModelStatistics:
        return cls(tensors["lambdas"], tensors["l"], tensors["s"], tensors["b"])


def interp(stats: ModelStatistics, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The piecewise-linear statistic v (N+1, *shape) at lambdas r (P,): (P, *shape), constant beyond the grid."""
    lam = stats.lambdas
    r = r.clamp(lam[0], lam[-1])
    i = (torch.searchsorted(lam, r, right=True) - 1).clamp(0, lam.numel() - 2)  # (P,)
    w = ((r - lam[i]) / (lam[i + 1] - lam[i])).reshape(-1, *([1] * (v.ndim - 1)))  # (P, 1...)
    return v[i] * (1 - w) + v[i + 1] * w


def primitive(stats: ModelStatistics, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """int_{lambda_0}^r v (P, *shape) of the piecewise-linear v (N+1, *shape), exactly (trapezoids are exact)."""
    lam = stats.lambdas
    shape = (-1, *([1] * (v.ndim - 1)))
    cum = torch.cat([torch.zeros_like(v[:1]), torch.cumsum((v[1:] + v[:-1]) / 2 * (lam[1:] - lam[:-1]).reshape(shape),
                                                           0)])  # (N+1, *shape)
    inside = r.clamp(lam[0], lam[-1])
    i = (torch.searchsorted(lam, inside, right=True) - 1).clamp(0, lam.numel() - 2)  # (P,)
    part = cum[i] + (v[i] + interp(stats, v, inside)) / 2 * (inside - lam[i]).reshape(shape)
    return part + v[0] * (r - inside).clamp(max=0).reshape(shape) + v[-1] * (r - inside).clamp(min=0).reshape(shape)


def gauss_legendre(lo: float, hi: float, knots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nodes (P, n), weights (P, n) and piece starts (P,) covering [lo, hi] (lo < hi) in pieces split at the
    grid knots and at most MAX_PIECE long."""
    inner = knots[(knots > lo) & (knots < hi)]
    cuts = torch.cat([torch.tensor([lo], dtype=F64), inner, torch.tensor([hi], dtype=F64)])
    parts = [torch.linspace(float(a), float(b), int(np.ceil(float(b - a) / MAX_PIECE)) + 1, dtype=F64)[:-1]
             for a, b in zip(cuts[:-1], cuts[1:])]
    starts = torch.cat(parts)  # (P,)
    ends = torch.cat([starts[1:], torch.tensor([hi], dtype=F64)])
    x, w = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(GL_NODES))
    half = ((ends - starts) / 2)[:, None]  # (P, 1)
    return starts[:, None] + half * (x + 1), half * w, starts


@dataclass(frozen=True)
class StepIntegrals:
    """The coefficients (*shape) of one DPM-Solver-v3 step from lambda a to t, polynomial degree < count."""

    decay: torch.Tensor  # e^{-ell(t)}
    moments: list[torch.Tensor]  # I_k = int_a^t e^{ell + sig - ell(t)} (r - a)^k dr, k = 0..count-1
    offset: torch.Tensor  # int_a^t e^{ell + sig - ell(t)} beta(r) dr


class EmsIntegrals:
    """Integrals of DPM-Solver-v3's update for one ModelStatistics (exact to round-off, see the module doc)."""

    def __init__(self, stats: ModelStatistics):
        self.stats = stats
        self.has_b = bool(stats.b.abs().max() > 0)

    def ell(self, a: float, r: torch.Tensor) -> torch.Tensor:
        """int_a^r l (P, *shape)."""
        return self._cum(self.stats.l, a, r)

    def sig(self, a: float, r: torch.Tensor) -> torch.Tensor:
        """int_a^r s (P, *shape)."""
        return self._cum(self.stats.s, a, r)

    def _cum(self, v: torch.Tensor, a: float, r: torch.Tensor) -> torch.Tensor:
        return primitive(self.stats, v, r) - primitive(self.stats, v, torch.tensor([a], dtype=F64))

    def _beta_density(self, a: float, u: torch.Tensor) -> torch.Tensor:
        """e^{-sig(u)} b(u) (P, *shape) at lambdas u (P,)."""
        return torch.exp(-self.sig(a, u)) * interp(self.stats, self.stats.b, u)

    def beta(self, a: float, r: torch.Tensor) -> torch.Tensor:
        """beta(r) = int_a^r e^{-sig} b (P, *shape) at lambdas r (P,), on either side of a."""
        shape = self.stats.b.shape[1:]
        if not self.has_b:
            return torch.zeros(r.numel(), *shape, dtype=F64)
        out = []
        for ri in r.tolist():
            lo, hi = min(a, ri), max(a, ri)
            if hi == lo:
                out.append(torch.zeros(shape, dtype=F64))
                continue
            nodes, weights, _ = gauss_legendre(lo, hi, self.stats.lambdas)  # (P, n) each
            dens = self._beta_density(a, nodes.reshape(-1))  # (P n, *shape)
            total = (weights.reshape(-1, *([1] * len(shape))) * dens).sum(0)
            out.append(total if ri > a else -total)
        return torch.stack(out)

    def _beta_at_nodes(self, a: float, nodes: torch.Tensor, starts: torch.Tensor,
                       weights: torch.Tensor) -> torch.Tensor:
        """beta at quadrature nodes (P, n): beta(piece start) + Gauss-Legendre from the start to each node."""
        shape = self.stats.b.shape[1:]
        ones = [1] * len(shape)
        piece = (weights.reshape(*weights.shape, *ones) * self._beta_density(a, nodes.reshape(-1)).reshape(
            *nodes.shape, *shape)).sum(1)  # (P, *shape)
        at_start = torch.cat([torch.zeros_like(piece[:1]), torch.cumsum(piece, 0)[:-1]])  # (P, *shape)
        x, w = (torch.from_numpy(v) for v in np.polynomial.legendre.leggauss(GL_NODES))
        half = (nodes - starts[:, None]) / 2  # (P, n)
        sub = starts[:, None, None] + half[..., None] * (x + 1)  # (P, n, m)
        dens = self._beta_density(a, sub.reshape(-1)).reshape(*sub.shape, *shape)
        return at_start[:, None] + ((half[..., None] * w).reshape(*sub.shape, *ones) * dens).sum(2)  # (P, n, *shape)

    def step(self, a: float, t: float, count: int) -> StepIntegrals:
        """Coefficients of the step from lambda a to t > a with a polynomial g of `count` coefficients."""
        nodes, weights, starts = gauss_legendre(a, t, self.stats.lambdas)  # (P, n) each
        flat = nodes.reshape(-1)  # (P n,)
        shape = self.stats.l.shape[1:]
        ones = [1] * len(shape)
        ell_t = self.ell(a, torch.tensor([t], dtype=F64))[0]  # (*shape)
        kernel = torch.exp(self.ell(a, flat) + self.sig(a, flat) - ell_t)  # (P n, *shape)
        wk = weights.reshape(-1, *ones) * kernel  # (P n, *shape)
        du = (flat - a).reshape(-1, *ones)  # (P n, 1...)
        moments = [(wk * du ** k).sum(0) for k in range(count)]
        if self.has_b:
            offset = (wk * self._beta_at_nodes(a, nodes, starts, weights).reshape(-1, *shape)).sum(0)
        else:
            offset = torch.zeros_like(ell_t)
        return StepIntegrals(torch.exp(-ell_t), moments, offset)
