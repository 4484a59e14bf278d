"""discrete.svdd: soft value-based decoding over discrete-diffusion particles (SVDD's discrete half).

Every step, each particle forks into M children (fresh noise keys, nodes/search/particles.py), the
sampler steps each child once, and one child is kept w.p. ~ exp(v / alpha) (search.svdd's choice, one
helper) with v = r(x0) of an x0 estimate of the child. With the exact soft value exp(v / alpha) =
E[exp(r(x0) / alpha) | x_t] and M -> infinity this samples p(x) exp(r(x) / alpha) / Z; any estimate
is SVDD's approximation (Li et al. 2024, Sec. 4), so the result is biased and no final weight corrects
it. `estimate="sample"` (default) scores one factorised draw x0 ~ prod_l p(x0_l | x_t): the selection
then averages exp(r(x0) / alpha) over children, which tends to the soft value as M grows (exact up to
the denoiser's factorisation); "argmax" scores the per-position argmax, a deterministic value whose
bias does not shrink with M (measured in tests/test_discrete_posterior.py). alpha = 0 is greedy."""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ...api import Node, node
from ...core.context import NodeContext
from ...search.budget import Budget
from ...search.particles import Particles
from ...search.resample import resample_generator
from ...search.svdd import soft_choice
from ..denoiser import DiscreteDenoiser
from ..sampler import DiscreteSampler, masked_fraction_error, step_unfinished
from ..samples import DiscreteSamples
from ..schedule import MaskSchedule
from ..template import Template
from .common import BudgetDiscreteDenoiser, Estimate, start, value
from .reward import SequenceReward


@node("discrete.svdd", version=1)
class DiscreteSvdd(Node):
    """Implements SVDD-PM for discrete diffusion (Li et al. 2024, Alg. 1): M children a step, one kept ~exp(v/alpha)."""

    uses_seed: ClassVar[bool] = True
    particles: int = Field(1, ge=1, le=1_000_000, description="independent steered samples per template text")
    candidates: int = Field(8, ge=1, le=4096, description="M: children drawn per particle and step")
    alpha: float = Field(1.0, ge=0, description="temperature: target ~ p(x) exp(r(x) / alpha); 0 = greedy argmax")
    estimate: Estimate = Field("sample", description="x0 estimate whose reward is the value: one factorised "
                               "draw (tends to the soft value as M grows), or the denoiser's argmax")

    def run(self, denoiser: DiscreteDenoiser, schedule: MaskSchedule, sampler: DiscreteSampler, template: Template,
            reward: SequenceReward, ctx: NodeContext) -> DiscreteSamples:
        """One steered sequence per particle, log_weight = its reward."""
        state, group, groups = start(denoiser, sampler, schedule, template, self.particles, ctx.noise, ctx.device)
        b, m, noise = state.batch, self.candidates, ctx.noise
        budget = Budget(groups)
        den = BudgetDiscreteDenoiser(denoiser, budget, group)
        parents = torch.arange(b, device=state.device).repeat_interleave(m)  # (B M,)
        p, k = Particles.start(state, group, groups), 0
        v = torch.zeros(b, dtype=torch.float64)
        while bool((~sampler.finished(p.state, schedule, den)).any()):
            ctx.check_cancelled()
            kids = p.fork(parents, k)  # (B M) children with fresh noise keys
            den.group = kids.group
            kids = kids.with_state(step_unfinished(sampler, den, schedule, kids.state, noise))
            vk = value(den, kids.state, reward, self.estimate, noise, kids.group, budget)  # (B M,)
            choice = soft_choice(vk.reshape(b, m), self.alpha, resample_generator(noise.seed, k))  # (B,)
            pick = torch.arange(b) * m + choice  # (B,)
            p, v = Particles.start(kids.state[pick.to(state.device)], group, groups), vk.cpu()[pick]
            k += 1
            ctx.progress(k, schedule.steps)
        masked_fraction_error(p.state, den)
        ctx.add_nfe(budget.calls)
        ctx.record(**budget.report(), denoiser_rows=den.rows, steps=k, reward_mean=float(v.mean()))
        return DiscreteSamples.of_state(p.state, denoiser, log_weight=v, group=group)
