"""schedule.ays_optimize: Align Your Steps' schedule optimisation run on our own models (Sabour et al. 2024).

"Align Your Steps: Optimizing Sampling Schedules in Diffusion Models" bounds the KL divergence between the
true reverse SDE and the one a first-order stochastic solver (SDE-DPM-Solver-1 / stochastic DDIM) integrates,
which holds D(x_{t_i}, t_i) fixed over each step [t_{i+1}, t_i]. With sigma(t) = t (our x = x0 + sigma eps),
the bound of one step is

    KLUB(t_{i+1}, t_i) = E_{x0, eps} int_{t_{i+1}}^{t_i} ||D(x0 + t eps, t) - D(x0 + t_i eps, t_i)||^2 / t^3 dt,

and the schedule is found by their iterative coordinate search: each interior level in turn moves to the
best of candidate levels between its neighbours (the sum of its two steps' bounds), sweeps repeat, and the
search stops early once a sweep improves the total bound by less than `tolerance` (the paper stresses that
early stopping is needed: the bound is loose, and running it to convergence over-fits it). Few-step
schedules are optimised first and then subdivided (a log-midpoint in the widest step) and re-optimised,
up to `steps`. Departures, said here: the time integral is a fixed Gauss-Legendre rule in log t and the
expectation a fixed calibration set (common random numbers, so the objective is deterministic and each
accepted move can only lower it), instead of the paper's importance-sampled Monte Carlo; the levels move on a
log-uniform candidate grid; sigma_max and sigma_min stay fixed and the final sigma = 0 is appended."""
from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser, Distribution
from ..core.noise import NoiseSource
from ..core.sigmas import Sigmas
from .calibration import Calibrated
from .common import F64, append_zero
from .karras import Karras

EPS_SLOT = 1  # the calibration eps of the bound, apart from the initial-noise draws (slot 0)


@node("schedule.ays_optimize", version=1)
class AYSOptimize(Calibrated):
    """Implements the Align Your Steps schedule optimisation of Sabour et al. (2024) (KLUB coordinate search)."""

    steps: int = Field(10, ge=2, description="solver steps of the schedule (positive levels before the final 0)")
    subdivisions: int = Field(0, ge=0, description="optimise at ~steps / 2^k steps first, then subdivide k times")
    iterations: int = Field(8, ge=1, description="most coordinate sweeps per stage")
    tolerance: float = Field(1e-3, ge=0, description="stop a stage when a sweep lowers the bound by less (relative)")
    candidates: int = Field(16, ge=1, description="log-uniform candidate levels between a level's neighbours")
    quadrature: int = Field(8, ge=1, description="Gauss-Legendre nodes in log t per step")
    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(80.0, gt=0)

    def run(self, denoise: Denoiser, ctx: NodeContext, data: torch.Tensor | None = None,
            reference: Distribution | None = None) -> Sigmas:
        """The optimised levels, from a Karras (EDM) start, followed by sigma = 0; the report holds the bound
        per stage after every sweep."""
        levels, history = self.optimise(denoise, self.clean_data(data, reference))
        ctx.record(klub=history)
        return Sigmas(append_zero(levels))  # (steps + 1,)

    def clean_data(self, data: torch.Tensor | None, reference: Distribution | None) -> torch.Tensor:
        """(N, ...) clean samples: `particles` rows of data, or exact draws of reference with `seed`."""
        if (data is None) == (reference is None):
            raise NodeError("schedule.ays_optimize needs exactly one of input 'data' (clean samples, e.g. data.digits) "
                            "or input 'reference' (an exact distribution, e.g. model.gmm)")
        if reference is not None:
            return reference.sample(self.particles, torch.Generator().manual_seed(self.seed)).float()
        if data.shape[0] < self.particles:
            raise NodeError(f"schedule.ays_optimize: input 'data' has {data.shape[0]} samples but 'particles' is "
                            f"{self.particles}; lower 'particles' or give more data")
        return data[:self.particles].float()

    def optimise(self, denoise: Denoiser, x0: torch.Tensor) -> tuple[torch.Tensor, list[list[float]]]:
        """Positive levels (steps,) float64 and, per stage, the total bound at its start and after every sweep."""
        eps = NoiseSource(self.seed).normal(torch.arange(x0.shape[0]), 0, tuple(x0.shape[1:]), EPS_SLOT)  # (N, ...)
        bound = Bound(denoise, x0.float(), eps, self.quadrature)
        counts = stage_counts(self.steps, self.subdivisions)
        levels = Karras(steps=counts[0], sigma_min=self.sigma_min, sigma_max=self.sigma_max).run().values[:-1]
        history: list[list[float]] = []
        for count in counts:
            levels = subdivide(levels, count)
            stage = [bound.total(levels)]
            for _ in range(self.iterations if count > 2 else 0):  # two levels: both ends are fixed
                levels = self.sweep(bound, levels)
                stage.append(bound.total(levels))
                if stage[-2] - stage[-1] <= self.tolerance * stage[-2]:
                    break  # early stopping (Sabour et al. 2024, appendix A.3)
            history.append(stage)
        return levels, history

    def sweep(self, bound: Bound, levels: torch.Tensor) -> torch.Tensor:
        """Each interior level in turn set to the best candidate (its current value included)."""
        levels = levels.clone()
        for i in range(1, levels.numel() - 1):
            hi, lo = float(levels[i - 1]), float(levels[i + 1])
            grid = np.exp(np.linspace(math.log(lo), math.log(hi), self.candidates + 2)[1:-1])
            trial = torch.tensor([float(levels[i]), *grid], dtype=F64)  # (G + 1,) current first: ties keep it
            cost = bound.pair(lo, trial, hi)  # (G + 1,)
            levels[i] = trial[int(cost.argmin())]
        return levels


class Bound:
    """KLUB estimates on a fixed calibration set x0, eps (N, ...) and a fixed log-t quadrature rule."""

    def __init__(self, denoise: Denoiser, x0: torch.Tensor, eps: torch.Tensor, quadrature: int):
        self.denoise, self.x0, self.eps = denoise, x0, eps
        nodes, weights = np.polynomial.legendre.leggauss(quadrature)
        self.nodes = torch.tensor((nodes + 1) / 2, dtype=F64)  # (Q,) on [0, 1]
        self.weights = torch.tensor(weights / 2, dtype=F64)  # (Q,) summing to 1

    def evaluate(self, t: torch.Tensor) -> torch.Tensor:
        """D(x0 + t eps, t) for each level t (T,) and calibration row: (T, N, ...), one batched call."""
        n = self.x0.shape[0]
        ts = t.float().repeat_interleave(n)  # (T N,)
        x = (self.x0.repeat(t.numel(), *[1] * (self.x0.ndim - 1))
             + ts.view(-1, *[1] * (self.x0.ndim - 1)) * self.eps.repeat(t.numel(), *[1] * (self.eps.ndim - 1)))
        return self.denoise(x, ts).view(t.numel(), *self.x0.shape)  # (T, N, ...)

    def steps(self, lo: torch.Tensor, hi: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """KLUB of the steps hi -> lo (each (K,)), whose anchors D(x_hi, hi) are given (K, N, ...): (K,) float64."""
        log_lo, log_hi = lo.log(), hi.log()  # (K,)
        u = log_lo.unsqueeze(1) + self.nodes.unsqueeze(0) * (log_hi - log_lo).unsqueeze(1)  # (K, Q)
        d = self.evaluate(u.exp().flatten()).view(*u.shape, *self.x0.shape)  # (K, Q, N, ...)
        sq = (d - anchor.unsqueeze(1)).flatten(3).double().pow(2).sum(3).mean(2)  # (K, Q)
        # dt / t^3 = du / t^2 in u = log t
        return ((self.weights * sq * (-2 * u).exp()).sum(1)) * (log_hi - log_lo)  # (K,)

    def pair(self, lo: float, mid: torch.Tensor, hi: float) -> torch.Tensor:
        """(G,) bound of the two steps hi -> mid -> lo for each candidate mid (G,)."""
        g = mid.numel()
        anchors = self.evaluate(torch.cat([mid, torch.tensor([hi], dtype=F64)]))  # (G + 1, N, ...)
        upper = self.steps(mid, torch.full((g,), hi, dtype=F64), anchors[-1:].expand(g, *anchors.shape[1:]))
        lower = self.steps(torch.full((g,), lo, dtype=F64), mid, anchors[:-1])
        return upper + lower

    def total(self, levels: torch.Tensor) -> float:
        """The bound of a whole schedule of positive levels (L,), decreasing."""
        anchors = self.evaluate(levels[:-1])  # (L - 1, N, ...)
        return float(self.steps(levels[1:], levels[:-1], anchors).sum())


def stage_counts(steps: int, subdivisions: int) -> list[int]:
    """Positive levels of each stage: about steps / 2^k for k = subdivisions .. 0, at least 3 (one free level)."""
    counts = [min(steps, max(3, math.ceil(steps / 2 ** k))) for k in range(subdivisions, -1, -1)]
    return [c for i, c in enumerate(counts) if i == 0 or c != counts[i - 1]]


def subdivide(levels: torch.Tensor, count: int) -> torch.Tensor:
    """(L,) decreasing positive levels with log-midpoints inserted into the widest steps until there are `count`."""
    levels = levels.clone()
    while levels.numel() < count:
        widths = levels[:-1].log() - levels[1:].log()  # (L - 1,)
        i = int(widths.argmax())
        mid = (levels[i] * levels[i + 1]).sqrt().view(1)
        levels = torch.cat([levels[:i + 1], mid, levels[i + 1:]])
    return levels
