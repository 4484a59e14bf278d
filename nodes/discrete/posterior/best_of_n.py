"""discrete.best_of_n: N independent discrete-diffusion samples per template text, ranked by a reward."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from ...api import Node, node
from ...core.context import NodeContext
from ...search.budget import Budget
from ..denoiser import DiscreteDenoiser
from ..sampler import DiscreteSampler, masked_fraction_error, run_discrete
from ..samples import DiscreteSamples
from ..schedule import MaskSchedule
from ..template import Template
from .common import BudgetDiscreteDenoiser, scored
from .reward import SequenceReward


@node("discrete.best_of_n", version=1)
class DiscreteBestOfN(Node):
    """Implements best-of-N random search (Ma et al. 2025, Sec. 3.1) over discrete-diffusion samples."""

    uses_seed: ClassVar[bool] = True
    n: int = Field(8, ge=1, le=1_000_000, description="N: samples per template text (discrete.sample's, draw for draw)")
    keep: Literal["best", "all"] = Field("best", description="'best': one row per text (the first of ties); "
                                         "'all': every sample, with its reward as log_weight")

    def run(self, denoiser: DiscreteDenoiser, schedule: MaskSchedule, sampler: DiscreteSampler, template: Template,
            reward: SequenceReward, ctx: NodeContext) -> DiscreteSamples:
        """The highest-reward sample per group (or all), log_weight = reward."""
        state, group, groups = template.start(denoiser, self.n, ctx.noise, ctx.device)
        budget = Budget(groups)
        den = BudgetDiscreteDenoiser(denoiser, budget, group)
        state = run_discrete(sampler, den, schedule, state, ctx.noise)
        masked_fraction_error(state, den)
        r = scored(reward, state.tokens, den, group, budget).cpu()  # (G N,)
        best = r.reshape(groups, self.n).argmax(1) + torch.arange(groups) * self.n  # (G,)
        ctx.add_nfe(budget.calls)
        ctx.record(**budget.report(), denoiser_rows=den.rows, reward_mean=float(r.mean()),
                   best_reward_mean=float(r[best].mean()))
        if self.keep == "all":
            return DiscreteSamples.of_state(state, denoiser, log_weight=r, group=group)
        return DiscreteSamples.of_state(state[best.to(state.device)], denoiser, log_weight=r[best], group=group[best])
