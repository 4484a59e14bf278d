"""Particles: a sampler State (or a token strategy's TokenState) plus float64 log-weights, group ids, lineage ids and fork keys.

Noise keys are the State's particle ids (NoiseSource draws are a pure function of them), so a
forked child gets a NEW id hashed from (parent id, step, child index): siblings then draw
different, reproducible noise (docs/ARCHITECTURE.md, "The contracts")."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ..core.noise import PARTICLE_MUL, SLOT_MUL, STEP_MUL, mix64
from ..core.state import State


def child_ids(parent: torch.Tensor, step: int, child: torch.Tensor) -> torch.Tensor:
    """Fresh particle ids (B,) int64 for child number `child` (B,) of `parent` (B,) forked at `step`."""
    z = parent * PARTICLE_MUL + torch.full_like(parent, step + 1) * STEP_MUL + (child + 1) * SLOT_MUL  # (B,) wraps
    return mix64(z)  # (B,)


def child_index(idx: torch.Tensor) -> torch.Tensor:
    """For ancestor indices idx (B,), the rank (B,) of each copy among copies of the same ancestor."""
    order = torch.argsort(idx, stable=True)  # (B,)
    sorted_idx = idx[order]  # (B,)
    start = torch.ones_like(sorted_idx, dtype=torch.bool)
    start[1:] = sorted_idx[1:] != sorted_idx[:-1]
    pos = torch.arange(idx.numel(), device=idx.device)  # (B,)
    first = torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), 0).values  # (B,) run starts
    rank = torch.empty_like(idx)
    rank[order] = pos - first
    return rank  # (B,)


def group_logsumexp(values: torch.Tensor, group: torch.Tensor, groups: int) -> torch.Tensor:
    """logsumexp of values (B,) float64 within each group: (G,); -inf for empty groups."""
    top = torch.full((groups,), -math.inf, dtype=values.dtype, device=values.device)
    top = top.scatter_reduce(0, group, values, "amax")  # (G,)
    safe = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # (G,)
    sums = torch.zeros_like(top).index_add(0, group, torch.exp(values - safe[group]))  # (G,)
    return safe + torch.log(sums)  # (G,)


@dataclass(frozen=True)
class Particles:
    """A batch of weighted particles; weights and resampling are per group (never across groups)."""

    state: State  # or nodes/lm TokenState: anything with batch, particle, [idx] and replace(particle=)
    log_w: torch.Tensor  # (B,) float64 accumulated log-weights since the last resampling
    group: torch.Tensor  # (B,) int64 in [0, groups)
    lineage: torch.Tensor  # (B,) int64 index of the root ancestor
    groups: int

    @classmethod
    def start(cls, state: State, group: torch.Tensor | None = None, groups: int | None = None) -> Particles:
        """Uniform weights (log w = 0); one group unless group ids (B,) are given."""
        b, dev = state.batch, state.particle.device
        group = torch.zeros(b, dtype=torch.long, device=dev) if group is None else group.to(dev, torch.long)
        groups = int(group.max()) + 1 if groups is None else groups
        return cls(state=state, log_w=torch.zeros(b, dtype=torch.float64, device=dev), group=group,
                   lineage=torch.arange(b, device=dev), groups=groups)

    @property
    def batch(self) -> int:
        return self.state.batch

    def with_state(self, state: State) -> Particles:
        return replace(self, state=state)

    def reweight(self, log_g: torch.Tensor) -> Particles:
        """Multiply each weight by a potential: log_w += log_g (B,) (accumulates between resamplings)."""
        return replace(self, log_w=self.log_w + log_g.to(torch.float64))

    def log_norm(self) -> torch.Tensor:
        """logsumexp of the log-weights per group (G,)."""
        return group_logsumexp(self.log_w, self.group, self.groups)

    def normalised(self) -> torch.Tensor:
        """Weights (B,) float64 normalised to sum 1 within each group."""
        return torch.exp(self.log_w - self.log_norm()[self.group])

    def ess(self) -> torch.Tensor:
        """Effective sample size per group (G,): (sum w)^2 / sum w^2 = 1 / sum wbar^2."""
        wbar = self.normalised()  # (B,)
        sq = torch.zeros(self.groups, dtype=torch.float64, device=wbar.device).index_add(0, self.group, wbar ** 2)
        return 1.0 / sq  # (G,)

    def sizes(self) -> torch.Tensor:
        """Particles per group (G,) int64."""
        return torch.bincount(self.group, minlength=self.groups)

    def fork(self, idx: torch.Tensor, step: int, log_w: torch.Tensor | None = None) -> Particles:
        """Gather ancestors idx (B',): children get fresh ids from (parent id, step, child rank); an
        ancestor copied once keeps its id (its noise stream continues). Weights default to gathered."""
        state = self.state[idx]
        parent = self.state.particle[idx]  # (B',)
        rank = child_index(idx)  # (B',)
        copies = torch.bincount(idx, minlength=self.batch)[idx]  # (B',)
        ids = torch.where(copies > 1, child_ids(parent, step, rank), parent)  # (B',)
        return Particles(state=state.replace(particle=ids), log_w=self.log_w[idx] if log_w is None else log_w,
                         group=self.group[idx], lineage=self.lineage[idx], groups=self.groups)
