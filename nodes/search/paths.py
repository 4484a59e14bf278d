"""search.paths: search over paths, N partial trajectories re-noised M ways, top N kept, repeated to x0."""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator

from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.sampler import Sampler, check_renoise
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from ..rewards.reward import Reward
from .budget import Budget, BudgetDenoiser
from .common import layout, scored, top_per_group, tweedie_reward
from .particles import Particles


@node("search.paths", version=1)
class Paths(Node):
    """Implements search over paths (Ma et al. 2025, Sec. 3.1), ranking partial paths by r(E[x0 | x_t])."""

    uses_seed: ClassVar[bool] = True
    n: int = Field(4, ge=1, description="N: paths kept per group; latent batch = N x groups")
    branches: int = Field(4, ge=1, description="M: re-noised copies of each path per round")
    start: int = Field(5, ge=0, description="schedule step where the first round branches")
    back: int = Field(2, ge=0, description="steps each copy is re-noised back up the schedule (Delta_f)")
    forward: int = Field(4, ge=1, description="steps each copy then runs down (Delta_b > Delta_f)")
    max_batch: int | None = Field(None, ge=1, description="largest denoiser batch (calls are chunked)")

    @model_validator(mode="after")
    def _progress(self) -> Paths:
        if self.forward <= self.back:
            raise ValueError(f"forward ({self.forward}) must exceed back ({self.back}) or a round makes no progress")
        return self

    def run(self, denoise: Denoiser, sigmas: Sigmas, sampler: Sampler, latent: torch.Tensor, reward: Reward,
            ctx: NodeContext) -> torch.Tensor:
        """The highest-reward path end of each group (G, ...)."""
        group, groups = layout(latent, self.n, "n")
        dev, m, total = latent.device, self.branches, sigmas.values.numel() - 1
        budget = Budget(groups)
        check_renoise(sampler, denoise)
        den = BudgetDenoiser(denoise, budget, group, self.max_batch)
        p = Particles.start(sampler.init(latent, sigmas), group, groups)
        p = p.with_state(self.walk(sampler, den, p.state, min(self.start, total), ctx))
        parents = torch.arange(groups * self.n, device=dev).repeat_interleave(m)  # (G*N*M,)
        rounds, s = 0, min(self.start, total)
        while s < total:
            kids = p.fork(parents, s) if m > 1 else p  # fresh noise keys per copy
            j = max(s - self.back, 0)
            st = kids.state
            lift = (st.sigmas[j] ** 2 - st.sigmas[s] ** 2).clamp_min(0).sqrt()  # scalar forward-noising scale
            eps = ctx.noise.like(st.x, st.particle, -1 - s)  # (B', ...) re-noising draws (negative step: no sampler's)
            x = st.x + bcast(lift.expand(st.batch), st.x) * eps  # (B', ...) x_j ~ q(x_j | x_s)
            state = sampler.init(x, sigmas, particle=st.particle).replace(  # history restarts at step j
                step=torch.full_like(st.step, j))
            den.group = kids.group
            state = self.walk(sampler, den, state, min(j + self.forward, total), ctx)
            v = tweedie_reward(den, state, reward, kids.group, budget)  # (G*N*M,)
            keep = top_per_group(v, groups, self.n)  # (G*N,)
            p = Particles.start(state[keep], kids.group[keep], groups)
            s, rounds = min(j + self.forward, total), rounds + 1
        den.group = p.group
        r = scored(reward, p.state.x, p.group, budget).reshape(groups, self.n)  # (G, N)
        best = r.argmax(1).to(dev) + torch.arange(groups, device=dev) * self.n  # (G,)
        ctx.add_nfe(budget.calls)
        ctx.record(**budget.report(), rounds=rounds, best_reward_mean=float(r.max(1).values.mean()))
        return p.state.x[best]  # (G, ...)

    @staticmethod
    def walk(sampler: Sampler, den: BudgetDenoiser, state: State, until: int, ctx: NodeContext) -> State:
        """Step all particles (in lockstep) from their step to step `until`."""
        for _ in range(int(state.step.min()), until):
            ctx.check_cancelled()
            state = sampler.step(den, state, ctx.noise)
        return state
