"""sampler.dpm_solver_v3_statistics: DPM-Solver-v3's empirical model statistics l, s, b (Zheng et al. 2023).

In sigma space (ems.py) N = y - D, f = N - l y = (1 - l) y - D, and per dimension (the paper's
element-wise EMS):
    l = E[diag dN/dy] = 1 - E[diag dD/dy]                    (Hutchinson: E[v * (J v)], Rademacher v)
    s, b = argmin E|df/dlambda - s f - b|^2,   df/dlambda = -l' y + (1 - l)(D - y) - dD/dlambda,
with dD/dlambda the total derivative along the ODE (a jvp in (y, lambda) with tangent (D - y, 1)) and
l' the central difference of l on the grid. Per grid lambda the node keeps the first and second
moments of (y, D - y, dD/dlambda) over the data batch, so s, b are closed-form regressions.

Departures (said in the README too): expectations are over the forward marginals of the data
batch (x0 + sigma eps) rather than samples of the model's own ODE; the regression for s has a
ridge term (ridge * the dimension-mean variance of f at that lambda, plus 1e-12 Var(y) against
round-off) and |s| is clamped to `s_clamp`, which keeps small models stable where f barely varies."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field, model_validator
from torch.nn.attention import SDPBackend, sdpa_kernel

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from .ems import F64, ModelStatistics

PROBE_SLOT = 1  # noise slot of the Hutchinson probes (slot 0: the forward noise)
ROUND_OFF = 1e-12  # relative to Var(y): where f vanishes analytically its variance is round-off


def dim_mean(v: torch.Tensor) -> torch.Tensor:
    """v (N+1, *shape) averaged over the sample dimensions, kept for broadcasting (N+1, 1...)."""
    dims = tuple(range(1, v.ndim))
    return v.mean(dim=dims, keepdim=True) if dims else v


@node("sampler.dpm_solver_v3_statistics", version=1)
class DpmSolverV3Statistics(Node):
    """Computes DPM-Solver-v3's empirical model statistics of a Denoiser on data (Zheng et al. 2023, Sec. 3)."""

    uses_seed: ClassVar[bool] = True
    grid: int = Field(200, ge=4, description="lambda intervals of the statistics grid (the paper: 1200)")
    sigma_min: float = Field(0.002, gt=0, description="lowest noise level of the grid")
    sigma_max: float = Field(80.0, gt=0, description="highest noise level of the grid")
    samples: int = Field(256, ge=2, description="data points used (the first of the batch)")
    probes: int = Field(2, ge=1, description="Rademacher probes per point for diag(dD/dy)")
    ridge: float = Field(1e-3, ge=0, description="ridge of the s regression, relative to the mean variance of f")
    s_clamp: float = Field(5.0, gt=0, description="|s| <= s_clamp")

    @model_validator(mode="after")
    def _range(self) -> DpmSolverV3Statistics:
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) must be below sigma_max ({self.sigma_max})")
        return self

    def run(self, denoise: Denoiser, data: torch.Tensor, ctx: NodeContext) -> ModelStatistics:
        """l, s, b (grid+1, *data.shape[1:]) from `samples` points of data (n, ...)."""
        if data.shape[0] < self.samples:
            raise NodeError(f"sampler.dpm_solver_v3_statistics: 'samples' is {self.samples} but the data input "
                            f"has only {data.shape[0]} points; lower 'samples' or pass more data")
        x0 = data[:self.samples].to(ctx.device)  # (n, ...)
        lams = torch.linspace(-math.log(self.sigma_max), -math.log(self.sigma_min), self.grid + 1, dtype=F64)
        moments = [self.moments(denoise, x0, float(lam), i, ctx) for i, lam in enumerate(lams)]
        diag = torch.stack([m[0] for m in moments])  # (N+1, *shape)
        mean = torch.stack([m[1] for m in moments])  # (N+1, 3, *shape)
        second = torch.stack([m[2] for m in moments])  # (N+1, 3, 3, *shape)
        l = 1 - diag
        dl = torch.gradient(l, spacing=(lams,), dim=0, edge_order=2)[0]  # (N+1, *shape)
        cov = second - mean[:, :, None] * mean[:, None, :]  # (N+1, 3, 3, *shape)
        one, zero = torch.ones_like(l), torch.zeros_like(l)
        cf = torch.stack([-l, -one, zero], 1)  # (N+1, 3, *shape): f = -l y - (D - y)
        cf1 = torch.stack([-dl, 1 - l, -one], 1)  # df/dlambda = -l' y + (1 - l)(D - y) - dD/dlambda
        var_f = torch.einsum("ni...,nij...,nj...->n...", cf, cov, cf)
        cov_f = torch.einsum("ni...,nij...,nj...->n...", cf1, cov, cf)
        floor = self.ridge * dim_mean(var_f) + ROUND_OFF * dim_mean(cov[:, 0, 0])  # f = 0 to round-off: s = 0
        s = (cov_f / (var_f + floor)).clamp(-self.s_clamp, self.s_clamp)
        b = (cf1 * mean).sum(1) - s * (cf * mean).sum(1)
        return ModelStatistics(lams, l, s, b)

    def moments(self, denoise: Denoiser, x0: torch.Tensor, lam: float, index: int,
                ctx: NodeContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """At one grid lambda: E[diag dD/dy] (*shape), means (3, *shape) and second moments (3, 3, *shape) of
        (y, D - y, dD/dlambda) over the batch, in float64."""
        n, shape = x0.shape[0], tuple(x0.shape[1:])
        particle = torch.arange(n, device=x0.device)
        sigma = math.exp(-lam)
        y = x0 + sigma * ctx.noise.normal(particle, index, shape, dtype=x0.dtype, device=x0.device)  # (n, ...)
        lam_b = torch.full((n,), lam, dtype=x0.dtype, device=x0.device)  # (n,)

        def fn(yy: torch.Tensor, ll: torch.Tensor) -> torch.Tensor:
            return denoise(yy, torch.exp(-ll))  # (n, ...)

        with torch.no_grad():
            d = fn(y, lam_b)  # (n, ...)
        u = d - y  # dy/dlambda
        diag = torch.zeros(shape, dtype=F64, device=x0.device)
        # autograd.functional.jvp differentiates twice (the double-backward trick); fused attention kernels
        # (flash / memory-efficient, e.g. the DiT's) have no double backward, the math kernel has
        with sdpa_kernel(SDPBackend.MATH):
            _, dd = torch.autograd.functional.jvp(fn, (y, lam_b), (u, torch.ones_like(lam_b)))  # (n, ...)
            for k in range(self.probes):
                v = ctx.noise.normal(particle, index, shape, slot=PROBE_SLOT + k, dtype=x0.dtype,
                                     device=x0.device).sign()
                _, jv = torch.autograd.functional.jvp(lambda yy: fn(yy, lam_b), y, v)  # (n, ...)
                diag += (v * jv).to(F64).mean(0) / self.probes
        z = torch.stack([y, u, dd], 1).to(F64)  # (n, 3, ...)
        second = (z[:, :, None] * z[:, None, :]).mean(0)  # (3, 3, ...)
        return diag.cpu(), z.mean(0).cpu(), second.cpu()
