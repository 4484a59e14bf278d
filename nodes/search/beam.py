"""search.beam: beam search over the denoising chain, K beams x M stochastic children, top K by r(x0-hat)."""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.sampler import Sampler, check_renoise
from ..core.sigmas import Sigmas
from ..rewards.reward import Reward
from .budget import Budget, BudgetDenoiser
from .common import layout, require_noise, scored, top_per_group, tweedie_reward
from .particles import Particles


@node("search.beam", version=1)
class Beam(Node):
    """Implements beam search over denoising steps (the step-level search baseline of Ma et al. 2025, Sec. 3)."""

    uses_seed: ClassVar[bool] = True
    beams: int = Field(4, ge=1, description="K: beams kept per group; latent batch = K x groups")
    children: int = Field(4, ge=1, description="M: stochastic children of each beam per step")
    max_batch: int | None = Field(None, ge=1, description="largest denoiser batch (calls are chunked)")

    def run(self, denoise: Denoiser, sigmas: Sigmas, sampler: Sampler, latent: torch.Tensor, reward: Reward,
            ctx: NodeContext) -> torch.Tensor:
        """The highest-reward final beam of each group (G, ...)."""
        require_noise("search.beam", sampler, self.children, "children")
        group, groups = layout(latent, self.beams, "beams")
        k, m, dev = self.beams, self.children, latent.device
        budget = Budget(groups)
        check_renoise(sampler, denoise)
        den = BudgetDenoiser(denoise, budget, group, self.max_batch)
        p = Particles.start(sampler.init(latent, sigmas), group, groups)
        parents = torch.arange(groups * k, device=dev).repeat_interleave(m)  # (G*K*M,) beam of each child
        total = sigmas.values.numel() - 1
        for step in range(total):
            ctx.check_cancelled()
            kids = p.fork(parents, step) if m > 1 else p  # children of a group stay contiguous
            den.group = kids.group
            state = sampler.step(den, kids.state, ctx.noise)
            v = tweedie_reward(den, state, reward, kids.group, budget)  # (G*K*M,)
            keep = top_per_group(v, groups, k)  # (G*K,)
            p = Particles.start(state[keep], kids.group[keep], groups)
            ctx.progress(step + 1, total)
        r = scored(reward, p.state.x, p.group, budget).reshape(groups, k)  # (G, K)
        best = r.argmax(1).to(dev) + torch.arange(groups, device=dev) * k  # (G,)
        ctx.add_nfe(budget.calls)
        ctx.record(**budget.report(), best_reward_mean=float(r.max(1).values.mean()))
        return p.state.x[best]  # (G, ...)
