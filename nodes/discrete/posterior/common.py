"""Shared plumbing of the search strategies over discrete particles: a budget-charging denoiser,
the x0 estimate and value of a particle, and the start of a run from a template. Budget, Particles
and the resamplers are nodes/search's own (docs/ARCHITECTURE.md, "Tokens")."""
from __future__ import annotations

from typing import Literal

import torch

from ....graph.errors import NodeError
from ...core.noise import NoiseSource
from ...search.budget import Budget
from ..denoiser import CountingDiscreteDenoiser, DiscreteDenoiser
from ..draws import VALUE, categorical
from ..sampler import DiscreteSampler
from ..schedule import MaskSchedule
from ..state import DiscreteState
from ..template import Template
from .reward import SequenceReward

Estimate = Literal["argmax", "sample"]


class BudgetDiscreteDenoiser(CountingDiscreteDenoiser):
    """Charges every batched call to a search Budget, and counts calls and rows. A call on the whole batch is
    charged per group (set `group` (B,) to the rows' group ids); a call on a subset of rows (unfinished
    rows, a sampler's x0 cache) cannot be attributed, so it counts as a call and in `rows` only."""

    def __init__(self, inner: DiscreteDenoiser, budget: Budget, group: torch.Tensor):
        super().__init__(inner)
        self.budget, self.group = budget, group

    def __call__(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        whole = tokens.shape[0] == self.group.shape[0]
        self.budget.charge_denoiser(self.group if whole else self.group[:0], 1)
        return super().__call__(tokens, t)


def start(den: DiscreteDenoiser, sampler: DiscreteSampler, schedule: MaskSchedule, template: Template, per_row: int,
          noise: NoiseSource, device: torch.device) -> tuple[DiscreteState, torch.Tensor, int]:
    """per_row particles per template row, initialised by the sampler: (state, group (B,), groups)."""
    sampler.check(den)
    state, group, groups = template.start(den, per_row, noise, device)
    return sampler.init(state, schedule, den), group, groups


def scored(reward: SequenceReward, tokens: torch.Tensor, den: DiscreteDenoiser, group: torch.Tensor,
           budget: Budget) -> torch.Tensor:
    """Reward (B,) float64 of clean sequences tokens (B, L), checked for shape and charged to the budget."""
    r = reward(tokens, den)
    if r.shape != tokens.shape[:1]:
        raise NodeError(f"the reward returned shape {tuple(r.shape)} for {tokens.shape[0]} sequences; a "
                        "SequenceReward must return one number per sequence, (B,)")
    budget.charge_reward(group)
    return r.detach().to(torch.float64).to(tokens.device)


def x0_estimate(den: BudgetDiscreteDenoiser, state: DiscreteState, estimate: Estimate,
                noise: NoiseSource) -> torch.Tensor:
    """(B, L) a clean sequence for each particle from the denoiser's p(x0 | x_t): its per-position
    argmax, or one factorised draw (slot VALUE); finished rows (no mask left) are themselves."""
    logp = den(state.tokens, state.t)  # (B, L, V)
    if estimate == "argmax":
        return logp.argmax(-1)
    return categorical(noise, logp, state.particle, state.step, VALUE)


def value(den: BudgetDiscreteDenoiser, state: DiscreteState, reward: SequenceReward, estimate: Estimate,
          noise: NoiseSource, group: torch.Tensor, budget: Budget, floor: float | None = None) -> torch.Tensor:
    """v (B,) = r(x0 estimate) of unfinished particles (at least `floor` when given: an estimate that
    breaks a constraint does not prove the particle cannot satisfy it), r(x) of finished ones."""
    done = ~state.masked(den.mask_id).any(-1) if den.mask_id is not None else state.t <= 0  # (B,)
    if bool(done.all()):
        return scored(reward, state.tokens, den, group, budget)
    den.group = group
    est = x0_estimate(den, state, estimate, noise)  # (B, L)
    r = scored(reward, torch.where(done[:, None], state.tokens, est), den, group, budget)  # (B,)
    return r if floor is None else torch.where(done, r, r.clamp(min=floor))
