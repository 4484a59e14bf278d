"""search.best_of_n: random search over initial noise, keep the highest-reward sample of each group."""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.sampler import Sampler
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

    def run(self, denoise: Denoiser, sigmas: Sigmas, sampler: Sampler, latent: torch.Tensor, reward: Reward,
            ctx: NodeContext) -> torch.Tensor:
        """The best sample of each group (G, ...)."""
        group, groups = layout(latent, self.n, "n")
        budget = Budget(groups)
        den = BudgetDenoiser(denoise, budget, group, self.max_batch)
        x = run_to_end(sampler, den, sampler.init(latent, sigmas), ctx.noise, ctx).x  # (B, ...)
        r = scored(reward, x, group, budget).reshape(groups, self.n)  # (G, n)
        best = r.argmax(1) + torch.arange(groups, device=r.device) * self.n  # (G,)
        ctx.add_nfe(budget.calls)
        ctx.record(**budget.report(), best_reward_mean=float(r.max(1).values.mean()),
                   reward_mean=float(r.mean()))
        return x[best.to(x.device)]  # (G, ...)
