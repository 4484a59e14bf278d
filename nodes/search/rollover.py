"""search.rollover: rollover budget forcing (RBF) for flow models sampled with an SDE (Kim et al. 2025).

Per group: draw `initial` noises, keep the one whose Tweedie x0 has the highest reward (its x0 is kept,
so the first step costs nothing more). Every intermediate step then gets an NFE allowance; a candidate is
one stochastic sampler step from the current state plus one denoiser call at the new level (its x0 scores
it and is reused as the next step's model output, so a candidate costs exactly 1 NFE). The first candidate
whose reward beats the best so far is taken at once and the unspent allowance rolls over to the next step;
when the allowance runs out, the best candidate of the step is taken. On the last intermediate step the
whole remaining allowance is spent (no early exit), then the final step to sigma = 0 reuses the kept x0.
So each group spends exactly `budget` particle-NFE: initial + (steps - 1) x allowance, the remainder of the
division going to the first step. Groups run in lockstep, each at its own noise level, in one batched call."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.sampler import Sampler, check_renoise
from ..core.sigmas import Sigmas
from ..core.state import State
from ..rewards.reward import Reward
from .budget import Budget, BudgetDenoiser
from .common import layout, require_noise, scored, top_per_group
from .particles import child_ids


class Known(Denoiser):
    """A denoiser that returns the x0 already computed for exactly this batch `x` (no call, no charge)."""

    def __init__(self, inner: Denoiser):
        self.inner, self.x, self.x0 = inner, None, None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.x0 if x is self.x else self.inner(x, sigma)


@node("search.rollover", version=1)
class Rollover(Node):
    """Implements rollover budget forcing (Kim et al. 2025, Sec. 5): per-step NFE allowances, unused NFE rolls over."""

    uses_seed: ClassVar[bool] = True
    initial: int = Field(4, ge=1, description="initial noises per group (latent batch = initial x groups)")
    budget: int = Field(64, ge=1, description="particle-NFE per group, spent exactly (>= initial + steps - 1)")
    max_batch: int | None = Field(None, ge=1, description="largest denoiser batch (calls are chunked)")

    def run(self, denoise: Denoiser, sigmas: Sigmas, sampler: Sampler, latent: torch.Tensor, reward: Reward,
            ctx: NodeContext) -> torch.Tensor:
        """One sample per group (G, ...)."""
        require_noise("search.rollover", sampler, 2, "candidate steps")
        if sampler.step_nfe != 1 or sampler.adapts_steps:
            raise NodeError(f"search.rollover prices a candidate at 1 NFE, so it needs a one-call-per-step sampler; "
                            f"{type(sampler).__name__} takes {sampler.step_nfe}, use e.g. sampler.flow_sde")
        group, groups = layout(latent, self.initial, "initial")
        steps = sigmas.steps
        if steps < 2 or self.budget < self.initial + steps - 1:
            raise NodeError(f"search.rollover 'budget' {self.budget} cannot give each of the {steps - 1} "
                            f"intermediate steps one candidate after {self.initial} initial noises; set budget >= "
                            f"{self.initial + max(steps, 2) - 1} (and use at least 2 steps)")
        budget = Budget(groups)
        check_renoise(sampler, denoise)
        den = BudgetDenoiser(denoise, budget, group, self.max_batch)
        known = Known(den)
        start = sampler.init(latent, sigmas)
        x0 = den(start.x, start.sigma)  # (B, ...) Tweedie estimates of every initial noise
        r0 = scored(reward, x0, group, budget)  # (B,)
        pick = top_per_group(r0, groups, 1)  # (G,)
        cur, cur_x0, best = start[pick], x0[pick], r0[pick]  # G particles, (G, ...), (G,)
        cur, cur_x0 = self.search(known, sampler, cur, cur_x0, best, reward, budget, ctx)
        known.x, known.x0 = cur.x, cur_x0
        den.group = torch.arange(groups, device=latent.device)
        out = sampler.step(known, cur, ctx.noise).x  # (G, ...) the final step reuses the kept x0
        ctx.add_nfe(budget.calls)
        ctx.record(**budget.report(), reward_mean=float(reward(out).double().mean()),
                   initial_best_reward_mean=float(best.mean()))
        return out

    def search(self, known: Known, sampler: Sampler, cur: State, cur_x0: torch.Tensor, best: torch.Tensor,
               reward: Reward, budget: Budget, ctx: NodeContext) -> tuple[State, torch.Tensor]:
        """Walk every group to the last intermediate level by rollover budget forcing; its state and x0."""
        g, dev, last = cur.batch, cur.x.device, cur.sigmas.numel() - 2  # last: the last intermediate level
        quota = (self.budget - self.initial) // last
        allow = torch.full((g,), quota, dtype=torch.long, device=dev)
        allow += (self.budget - self.initial) % last  # the remainder goes to the first step
        used = torch.zeros_like(allow)
        best = best.clone()
        top_r = torch.full((g,), -math.inf, dtype=torch.float64, device=dev)  # (G,) best candidate of the step
        top, top_x0 = cur, cur_x0
        while bool((cur.step < last).any()):
            ctx.check_cancelled()
            idx = (cur.step < last).nonzero().flatten()  # (A,) groups still searching
            parent = cur[idx]
            attempt = used[idx] * (last + 2) + parent.step  # (A,) unique per (step, attempt), per particle
            kid = parent.replace(particle=child_ids(parent.particle, 0, attempt))
            known.x, known.x0, known.inner.group = kid.x, cur_x0[idx], idx
            kid = sampler.step(known, kid, ctx.noise)  # A candidates one level down (the step itself is free)
            kid_x0 = known.inner(kid.x, kid.sigma)  # (A, ...) 1 NFE each
            r = scored(reward, kid_x0, idx, budget)  # (A,)
            used[idx] += 1
            accept = (r > best[idx]) & (kid.step < last)  # (A,) early exit, not on the last level
            better = r > top_r[idx]  # (A,)
            top_r[idx] = torch.where(better, r, top_r[idx])
            top = top.put(idx[better], kid[better.nonzero().flatten()])
            top_x0 = top_x0.index_copy(0, idx[better], kid_x0[better])
            done = ~accept & (used[idx] >= allow[idx])  # (A,) allowance spent: take the step's best
            take, fall = idx[accept], idx[done]
            cur = cur.put(take, kid[accept.nonzero().flatten()]).put(fall, top[fall])
            cur_x0 = cur_x0.index_copy(0, take, kid_x0[accept]).index_copy(0, fall, top_x0[fall])
            best[take], best[fall] = r[accept], torch.maximum(best[fall], top_r[fall])
            allow[take], allow[fall] = quota + allow[take] - used[take], quota
            used[take], used[fall], top_r[take], top_r[fall] = 0, 0, -math.inf, -math.inf
        return cur, cur_x0
