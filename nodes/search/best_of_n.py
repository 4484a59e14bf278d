"""search.best_of_n: random search over initial noise, keep the highest-reward sample of each group."""
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
from .common import layout, run_to_end, scored


@node("search.best_of_n", version=1)
class BestOfN(Node):
    """Implements best-of-N random search over initial noises (Ma et al. 2025, Sec. 3.1 "random search")."""

    uses_seed: ClassVar[bool] = True
    n: int = Field(8, ge=1, description="candidates per group; latent batch = n x groups")
    max_batch: int | None = Field(None, ge=1, description="largest denoiser batch (calls are chunked)")
    max_nfe: int | None = Field(None, ge=1, description="particle-NFE budget per group: stop adding candidates "
                                "once the next round would exceed it (the first round always runs)")
    per_round: int | None = Field(None, ge=1, description="candidates per group run together in one round "
                                  "(default: all n at once); rounds are how max_nfe stops early")

    def run(self, denoise: Denoiser, sigmas: Sigmas, sampler: Sampler, latent: torch.Tensor, reward: Reward,
            ctx: NodeContext) -> torch.Tensor:
        """The best sample of each group (G, ...)."""
        group, groups = layout(latent, self.n, "n")
        dev, n = latent.device, self.n
        k = min(n, self.per_round or n)
        budget = Budget(groups, max_particle_nfe=self.max_nfe)
        check_renoise(sampler, denoise)
        den = BudgetDenoiser(denoise, budget, group, self.max_batch)
        xs, rs, done = [], [], 0
        while done < n:
            cols = torch.arange(done, min(n, done + k), device=dev)  # (k',) candidate columns of this round
            if done and self.max_nfe is not None:  # per-candidate cost is known after the first round
                cost = int(budget.particle_nfe.max()) // done
                if int(budget.particle_nfe.max()) + cost * cols.numel() > self.max_nfe:
                    break
            rows = (torch.arange(groups, device=dev)[:, None] * n + cols[None]).flatten()  # (G*k',) latent rows
            den.group = group[rows]
            # particle ids are the latent row numbers, so a round draws the same noise as a one-round run
            x = run_to_end(sampler, den, sampler.init(latent[rows], sigmas, particle=rows), ctx.noise, ctx).x
            xs.append(x.reshape(groups, cols.numel(), *x.shape[1:]))  # (G, k', ...)
            rs.append(scored(reward, x, group[rows], budget).reshape(groups, cols.numel()))  # (G, k')
            done += cols.numel()
        x, r = torch.cat(xs, 1), torch.cat(rs, 1)  # (G, done, ...), (G, done)
        best = r.argmax(1).to(dev)  # (G,)
        ctx.add_nfe(budget.calls)
        ctx.record(**budget.report(), candidates=done, best_reward_mean=float(r.max(1).values.mean()),
                   reward_mean=float(r.mean()))
        return x[torch.arange(groups, device=dev), best]  # (G, ...)
