"""Budget: denoiser NFE (batched calls, chunks, particle-evaluations per group), reward calls
and wall time of a search strategy; `report()` is what the run report shows."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ...graph.errors import NodeError
from ..core.denoiser import Denoiser


@dataclass
class Budget:
    """Counters per group; `particle_nfe` is rows x denoiser calls (a CFG or Heun stage counts each call)."""

    groups: int
    max_particle_nfe: int | None = None  # per group; None: unlimited
    calls: int = 0  # logical batched denoiser calls (what ctx.add_nfe counts)
    chunks: int = 0  # physical calls after chunking to max_batch
    reward_calls: int = 0
    particle_nfe: torch.Tensor = field(default=None)  # type: ignore[assignment]  # (G,) int64
    reward_evals: torch.Tensor = field(default=None)  # type: ignore[assignment]  # (G,) int64
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        if self.particle_nfe is None:
            self.particle_nfe = torch.zeros(self.groups, dtype=torch.long)
        if self.reward_evals is None:
            self.reward_evals = torch.zeros(self.groups, dtype=torch.long)

    def charge_denoiser(self, group: torch.Tensor, chunks: int) -> None:
        self.calls += 1
        self.chunks += chunks
        self.particle_nfe += torch.bincount(group.cpu(), minlength=self.groups)

    def charge_reward(self, group: torch.Tensor) -> None:
        self.reward_calls += 1
        self.reward_evals += torch.bincount(group.cpu(), minlength=self.groups)

    def exhausted(self) -> torch.Tensor:
        """(G,) bool: groups whose particle-NFE reached max_particle_nfe."""
        if self.max_particle_nfe is None:
            return torch.zeros(self.groups, dtype=torch.bool)
        return self.particle_nfe >= self.max_particle_nfe

    @property
    def wall_s(self) -> float:
        return time.perf_counter() - self.started

    def report(self) -> dict[str, Any]:
        """JSON-serialisable totals (per-group lists included) for ctx.record."""
        return {"denoiser_calls": self.calls, "denoiser_chunks": self.chunks,
                "particle_nfe": int(self.particle_nfe.sum()), "particle_nfe_per_group": self.particle_nfe.tolist(),
                "reward_calls": self.reward_calls, "reward_evals": int(self.reward_evals.sum()),
                "wall_s": round(self.wall_s, 6)}


class BudgetDenoiser(Denoiser):
    """Wraps a denoiser: splits each batched call into chunks of at most max_batch rows, charges the budget.

    Set `group` (B,) to the group ids of the rows the next calls will see."""

    def __init__(self, inner: Denoiser, budget: Budget, group: torch.Tensor, max_batch: int | None = None):
        if inner.stateful:
            raise NodeError("search strategies do not carry a stateful denoiser's per-particle memory (guidance.apg "
                            "momentum, model.step_cache / model.deep_cache block caches); set momentum to 0, or "
                            "search with the uncached model")
        self.inner, self.budget, self.group, self.max_batch = inner, budget, group, max_batch

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.chunked(x, sigma, renoise=False)[0]  # (B, ...)

    @property
    def separate_renoise(self) -> bool:
        return self.inner.separate_renoise

    def estimates(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inner (x0, x0_renoise), chunked and charged as one call; one tensor twice for plain denoisers."""
        if not self.separate_renoise:
            x0 = self(x, sigma)  # (B, ...)
            return x0, x0
        x0, x0_r = self.chunked(x, sigma, renoise=True)
        return x0, x0_r

    def chunked(self, x: torch.Tensor, sigma: torch.Tensor, renoise: bool) -> tuple[torch.Tensor, ...]:
        """The inner (x0,) or (x0, x0_renoise) (each (B, ...)) over chunks of at most max_batch rows, handed to
        the inner `evaluate_many` together (a split denoiser runs them at once), charged to the budget once."""
        if x.shape[0] != self.group.shape[0]:
            raise NodeError(f"search: the sampler called the denoiser on {x.shape[0]} rows but the strategy holds "
                            f"{self.group.shape[0]} particles; use a sampler that steps the whole batch")
        size = x.shape[0] if not self.max_batch else self.max_batch
        parts = self.inner.evaluate_many(x.split(size), sigma.split(size), renoise)  # tuples of (b, ...)
        self.budget.charge_denoiser(self.group, len(parts))
        if len(parts) == 1:
            return parts[0]
        return tuple(torch.cat(col) for col in zip(*parts))  # (B, ...) each
