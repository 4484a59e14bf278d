"""search.rejection: exact samples of p(x) exp(lambda r(x)) / Z by rejection against a bounded reward."""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.sampler import Sampler, check_renoise
from ..core.sigmas import Sigmas
from ..rewards.reward import Reward
from .budget import Budget, BudgetDenoiser
from .common import layout, run_to_end, scored
from .resample import resample_generator

REJECTION_STEP = -7  # generator key of the acceptance uniforms, distinct from every resampling step


@node("search.rejection", version=1)
class Rejection(Node):
    """Implements rejection sampling (von Neumann 1951) of the reward-tilted target p(x) exp(lambda r(x))."""

    uses_seed: ClassVar[bool] = True
    lam: float = Field(1.0, ge=0, description="lambda: the tilt strength (inverse temperature)")
    max_batch: int | None = Field(None, ge=1, description="largest denoiser batch (calls are chunked)")

    def run(self, denoise: Denoiser, sigmas: Sigmas, sampler: Sampler, latent: torch.Tensor, reward: Reward,
            ctx: NodeContext) -> torch.Tensor:
        """The accepted samples (A, ...), in batch order; A varies (acceptance rate recorded)."""
        if reward.r_max is None:
            raise NodeError("search.rejection needs a reward bounded above (r_max), e.g. reward.quadratic; "
                            "reward.linear is unbounded")
        group, _ = layout(latent, 1)
        budget = Budget(1)
        check_renoise(sampler, denoise)
        den = BudgetDenoiser(denoise, budget, group * 0, self.max_batch)
        x = run_to_end(sampler, den, sampler.init(latent, sigmas), ctx.noise, ctx).x  # (B, ...)
        r = scored(reward, x, group * 0, budget)  # (B,)
        u = torch.rand(x.shape[0], generator=resample_generator(ctx.noise.seed, REJECTION_STEP), dtype=torch.float64)
        accept = (torch.log(u) < self.lam * (r - reward.r_max).cpu()).to(x.device)  # (B,)
        ctx.add_nfe(budget.calls)
        ctx.record(**budget.report(), accepted=int(accept.sum()), acceptance_rate=float(accept.double().mean()))
        if not bool(accept.any()):
            raise NodeError(f"search.rejection accepted none of {x.shape[0]} samples; raise the latent batch or "
                            f"lower lam ({self.lam})")
        return x[accept]  # (A, ...)
