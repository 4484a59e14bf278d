"""Resamplers (multinomial, stratified, systematic, residual; Douc, Cappe & Moulines 2005) and
triggers, all within groups (never across). Vectorised over groups by sorting particles by group
and offsetting each group's CDF by its rank, so one searchsorted serves every group."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field

from ..api import Node
from ..core.noise import GOLDEN, STEP_MUL, mix64
from .particles import Particles, group_logsumexp

Method = Literal["multinomial", "stratified", "systematic", "residual"]
METHODS: tuple[str, ...] = ("multinomial", "stratified", "systematic", "residual")


def resample_generator(seed: int, step: int) -> torch.Generator:
    """A CPU generator seeded from (NoiseSource seed, step): resampling is reproducible per step."""
    z = mix64(torch.tensor([seed], dtype=torch.long) * GOLDEN + torch.tensor([step + 2], dtype=torch.long) * STEP_MUL)
    return torch.Generator().manual_seed(int(z) & ((1 << 63) - 1))


def _search(cdf: torch.Tensor, u: torch.Tensor, rank_of: torch.Tensor, start: torch.Tensor,
            end: torch.Tensor) -> torch.Tensor:
    """Indices into the sorted batch for uniforms u (M,) in [0, 1) of groups with ranks rank_of (M,)."""
    pos = torch.searchsorted(cdf, rank_of.to(cdf) + u, right=True)  # (M,)
    return torch.minimum(torch.maximum(pos, start), end - 1)  # (M,) clamp round-off into the group


def resample_indices(log_w: torch.Tensor, group: torch.Tensor, groups: int, method: Method,
                     generator: torch.Generator) -> torch.Tensor:
    """Ancestor indices (B,): slot j draws an ancestor from its own group with offspring counts unbiased
    for N_g * normalised weight."""
    b = log_w.shape[0]
    order = torch.argsort(group, stable=True)  # (B,) sorted position -> original index
    g = group[order].cpu()  # (B,)
    lw = log_w[order].cpu().to(torch.float64)  # (B,)
    n = torch.bincount(g, minlength=groups)  # (G,)
    start_g = torch.cumsum(n, 0) - n  # (G,)
    w = torch.exp(lw - group_logsumexp(lw, g, groups)[g])  # (B,) normalised per group
    local = torch.arange(b) - start_g[g]  # (B,) slot index within its group
    nb = n[g].to(torch.float64)  # (B,)
    start, end = start_g[g], (start_g + n)[g]  # (B,)
    csum = torch.cumsum(w, 0)  # (B,)
    before = torch.cat([csum.new_zeros(1), csum])[start_g][g]  # (B,) mass of earlier groups
    cdf = g.to(torch.float64) + (csum - before)  # (B,) increasing: rank + within-group CDF
    if method == "multinomial":
        u = torch.rand(b, generator=generator, dtype=torch.float64)  # (B,)
        pick = _search(cdf, u, g, start, end)
    elif method == "stratified":
        u = (local + torch.rand(b, generator=generator, dtype=torch.float64)) / nb  # (B,)
        pick = _search(cdf, u, g, start, end)
    elif method == "systematic":
        u0 = torch.rand(groups, generator=generator, dtype=torch.float64)  # (G,) one offset per group
        pick = _search(cdf, (local + u0[g]) / nb, g, start, end)
    elif method == "residual":
        scaled = nb * w  # (B,)
        copies = torch.floor(scaled + 1e-12).long()  # (B,) deterministic offspring
        resid = (scaled - copies).clamp(min=0)  # (B,)
        det = torch.repeat_interleave(torch.arange(b), copies)  # (sum copies,) sorted, so grouped
        rest = n - torch.bincount(g, weights=copies.to(torch.float64), minlength=groups).long()  # (G,)
        rg = torch.repeat_interleave(torch.arange(groups), rest)  # (R,) group of each residual draw
        rsum = torch.zeros(groups, dtype=torch.float64).index_add(0, g, resid)  # (G,)
        rcs = torch.cumsum(resid, 0)
        rbefore = torch.cat([rcs.new_zeros(1), rcs])[start_g][g]
        rcdf = g.to(torch.float64) + (rcs - rbefore) / rsum.clamp(min=1e-300)[g]  # (B,)
        u = torch.rand(rg.numel(), generator=generator, dtype=torch.float64)  # (R,)
        drawn = _search(rcdf, u, rg, start_g[rg], (start_g + n)[rg])  # (R,)
        both = torch.cat([det, drawn])  # (B,)
        pick = both[torch.argsort(g[both], stable=True)]  # (B,) grouped like the sorted slots
    else:
        raise ValueError(f"unknown resampling method {method!r}; use one of {METHODS}")
    out = torch.empty(b, dtype=torch.long)
    out[order.cpu()] = order.cpu()[pick]  # slot order[j] gets ancestor order[pick[j]]
    return out.to(log_w.device)


def ess_from_log_w(log_w: torch.Tensor) -> torch.Tensor:
    """ESS (scalar) of one set of log-weights: exp(2 lse(w) - lse(2w))."""
    return torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))


@dataclass(frozen=True)
class Trigger:
    """When to resample a group: ESS below ess_fraction * N, every `every` steps, inside a sigma window."""

    ess_fraction: float | None = 0.5  # None: no ESS condition (resample whenever the other conditions hold)
    every: int = 1  # step k is eligible when (k + 1) % every == 0
    sigma_min: float = 0.0
    sigma_max: float = math.inf

    def groups_due(self, particles: Particles, step: int, sigma: float) -> torch.Tensor:
        """(G,) bool: groups to resample after step `step` (the level just reached is `sigma`)."""
        ok = (step + 1) % self.every == 0 and self.sigma_min <= sigma <= self.sigma_max
        due = torch.full((particles.groups,), bool(ok), dtype=torch.bool, device=particles.log_w.device)
        if self.ess_fraction is not None:
            due &= particles.ess() < self.ess_fraction * particles.sizes().to(torch.float64)
        return due


def resample(particles: Particles, method: Method, generator: torch.Generator, step: int,
             due: torch.Tensor | None = None, extra: tuple[torch.Tensor, ...] = ()
             ) -> tuple[Particles, tuple[torch.Tensor, ...]]:
    """Resample the groups marked `due` (G,) (all by default); afterwards every weight of a resampled
    group is logsumexp(W_g) - log N_g, so the normaliser estimate is kept. `extra` (B, ...) are gathered too."""
    if due is None:
        due = torch.ones(particles.groups, dtype=torch.bool, device=particles.log_w.device)
    if not bool(due.any()):
        return particles, extra
    idx = resample_indices(particles.log_w, particles.group, particles.groups, method, generator)  # (B,)
    slot_due = due[particles.group]  # (B,)
    idx = torch.where(slot_due, idx, torch.arange(particles.batch, device=idx.device))  # (B,)
    mean_w = particles.log_norm() - torch.log(particles.sizes().to(torch.float64))  # (G,)
    log_w = torch.where(slot_due, mean_w[particles.group], particles.log_w)  # (B,)
    out = particles.fork(idx, step, log_w=log_w[idx])
    return out, tuple(t[idx] for t in extra)


__all__ = ["METHODS", "Method", "Trigger", "ess_from_log_w", "resample", "resample_generator", "resample_indices"]


class ResamplingSearch(Node):
    """Parameters shared by the SMC-family strategies (smc, tds, fkc): particles per group and resampling."""

    uses_seed: ClassVar[bool] = True
    particles: int = Field(8, ge=1, description="particles per group; latent batch = particles x groups")
    resampler: Method = Field("systematic", description="resampling scheme (within groups)")
    ess_threshold: float | None = Field(0.5, ge=0, le=1, description="resample a group when ESS < this x N; "
                                                                       "None: whenever the other conditions hold")
    every: int = Field(1, ge=1, description="consider resampling every k steps")
    sigma_min: float = Field(0.0, ge=0, description="resample only at noise levels >= sigma_min")
    sigma_max: float = Field(math.inf, gt=0, description="resample only at noise levels <= sigma_max")
    keep: Literal["all", "one"] = Field("all", description="'all': every particle after a final resampling; "
                                                           "'one': one weighted draw per group")
    max_batch: int | None = Field(None, ge=1, description="largest denoiser batch (calls are chunked)")

    def trigger(self) -> Trigger:
        """When to resample, from the parameters."""
        return Trigger(self.ess_threshold, self.every, self.sigma_min, self.sigma_max)
