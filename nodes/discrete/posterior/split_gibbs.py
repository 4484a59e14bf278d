"""discrete.split_gibbs: Split Gibbs discrete diffusion posterior sampling (SGDD; Chu, Wu, Chen, Song & Yue
2025, arXiv 2503.01161) for uniform-noise models, targeting p(x) exp(r(x)) with r a log-likelihood or
log-reward on complete sequences.

Split Gibbs samples the joint pi(x, z) ~ exp(r(x)) q_eta(x | z) p(z): z is a clean sequence under the
prior, x its noised copy through the model's own forward kernel at level eta, the likelihood sits on x.
Its two conditionals are what the algorithm alternates:
- prior step, z | x ~ p(z | x_t = x) at t = eta: the sampler, started from x at time eta, denoises to 0;
- likelihood step, x | z ~ exp(r(x)) q_eta(x | z): Metropolis-Hastings with single-site uniform proposals
  (the paper's sampler); q_eta(x | z) = prod_l (alpha [x_l = z_l] + (1 - alpha) / C), alpha = alpha(eta),
  C clean tokens, i.e. a Hamming-distance potential D(x, z; eta).
As eta -> 0, q_eta(x | z) tends to [x = z] and the x-marginal to the target; eta is annealed from t_max
down to t_min over `iterations` (the paper's schedule), and the last likelihood step's x is returned.
The kernel here is the uniform channel's exact per-token probability (1 - alpha) / C; the authors'
code scores a Hamming distance h as h log P(differ) + (L - h) log P(same), which omits the
(C - 1)^-h of which token a differing position holds. Masked (absorbing) models are not covered:
the paper's construction uses the uniform kernel."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field, model_validator

from ....graph.errors import NodeError
from ...api import Node, node
from ...core.context import NodeContext
from ...core.noise import NoiseSource
from ...search.budget import Budget
from ...search.particles import child_ids
from ..denoiser import DiscreteDenoiser
from ..draws import ACCEPT, uniform
from ..sampler import DiscreteSampler, run_discrete
from ..samples import DiscreteSamples
from ..schedule import MaskSchedule
from ..state import DiscreteState
from ..template import Template
from .common import BudgetDiscreteDenoiser, scored
from .reward import SequenceReward

PRIOR, LIKELIHOOD = 0, 1  # child numbers of a particle's per-iteration noise keys


class FromTime(MaskSchedule):
    """A schedule's alpha on a grid from t0 down to 0 (the prior step starts at the coupling level)."""

    def __init__(self, inner: MaskSchedule, t0: float):
        steps = max(1, math.ceil(inner.steps * t0))
        super().__init__(steps)
        self.inner = inner
        self.times = torch.linspace(t0, 0.0, steps + 1, dtype=torch.float64)  # (S + 1,)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.inner.alpha(t)

    def time_of(self, alpha: torch.Tensor) -> torch.Tensor:
        return self.inner.time_of(alpha)


def coupling(x: torch.Tensor, z: torch.Tensor, alpha: float, clean: int) -> torch.Tensor:
    """(B,) log q_eta(x | z) of the uniform channel, x and z (B, L)."""
    differ = (x != z).sum(-1).to(torch.float64)  # (B,)
    return differ * math.log((1 - alpha) / clean) + (x.shape[1] - differ) * math.log(alpha + (1 - alpha) / clean)


@node("discrete.split_gibbs", version=1)
class SplitGibbs(Node):
    """Implements SGDD (Chu et al. 2025): alternating diffusion prior steps and MH likelihood steps, annealed eta."""

    uses_seed: ClassVar[bool] = True
    particles: int = Field(1, ge=1, le=1_000_000, description="independent chains per template text")
    iterations: int = Field(20, ge=1, le=10_000, description="prior / likelihood alternations")
    mh_steps: int = Field(20, ge=1, le=100_000, description="single-site Metropolis-Hastings updates per likelihood "
                          "step")
    t_max: float = Field(0.9, gt=0, le=1, description="coupling level eta of the first iteration (diffusion time)")
    t_min: float = Field(0.02, gt=0, le=1, description="coupling level of the last iteration (-> 0: exact target)")

    @model_validator(mode="after")
    def _levels(self) -> SplitGibbs:
        if self.t_min > self.t_max:
            raise ValueError(f"t_min ({self.t_min}) must not exceed t_max ({self.t_max})")
        return self

    def run(self, denoiser: DiscreteDenoiser, schedule: MaskSchedule, sampler: DiscreteSampler, template: Template,
            reward: SequenceReward, ctx: NodeContext) -> DiscreteSamples:
        """One chain's final x per particle, log_weight = r(x)."""
        if denoiser.mask_id is not None:
            raise NodeError("discrete.split_gibbs couples x and z through a uniform-noise kernel (Chu et al. 2025); "
                            "the model is a masked-noise model: use discrete.smc or discrete.svdd with a constraint")
        sampler.check(denoiser)
        state, group, groups = template.start(denoiser, self.particles, ctx.noise, ctx.device)
        budget = Budget(groups)
        den = BudgetDiscreteDenoiser(denoiser, budget, group)
        x, ids = state.tokens, state.particle  # (B, L), (B,)
        levels = torch.linspace(self.t_max, self.t_min, self.iterations, dtype=torch.float64)  # (K,)
        for i, eta in enumerate(levels.tolist()):
            ctx.check_cancelled()
            prior_ids, likelihood_ids = (child_ids(ids, i, torch.full_like(ids, c)) for c in (PRIOR, LIKELIHOOD))
            z = self.prior(den, FromTime(schedule, eta), sampler, state, x, prior_ids, ctx.noise)
            alpha = float(schedule.alpha(torch.tensor(eta, dtype=torch.float64)))
            x = self.likelihood(den, reward, x, z, state.fixed, alpha, likelihood_ids, ctx.noise, group, budget)
            ctx.progress(i + 1, self.iterations)
        r = scored(reward, x, den, group, budget)
        ctx.add_nfe(budget.calls)
        ctx.record(**budget.report(), denoiser_rows=den.rows, iterations=self.iterations, reward_mean=float(r.mean()))
        return DiscreteSamples.of_state(state.replace(tokens=x), denoiser, log_weight=r.cpu(), group=group)

    @staticmethod
    def prior(den: DiscreteDenoiser, schedule: FromTime, sampler: DiscreteSampler, state: DiscreteState,
              x: torch.Tensor, ids: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
        """z (B, L) ~ p(z | x_t = x) at t = schedule.times[0]: the sampler run from x down to 0."""
        start = state.replace(tokens=x, particle=ids)
        return run_discrete(sampler, den, schedule, start, noise).tokens

    def likelihood(self, den: DiscreteDenoiser, reward: SequenceReward, x: torch.Tensor, z: torch.Tensor,
                   fixed: torch.Tensor, alpha: float, ids: torch.Tensor, noise: NoiseSource, group: torch.Tensor,
                   budget: Budget) -> torch.Tensor:
        """x (B, L) after mh_steps single-site MH updates targeting exp(r(x)) q_eta(x | z), started at the
        current x (MH within Gibbs: the joint stays invariant; the authors' code restarts at z, which
        does not); fixed positions are never proposed."""
        clean = den.clean_ids.to(z.device)  # (C,)
        free = (~fixed).to(torch.float64)  # (B, L)
        cur = scored(reward, x, den, group, budget) + coupling(x, z, alpha, clean.numel())  # (B,)
        for j in range(self.mh_steps):
            u = uniform(noise, ids, j, (x.shape[1] + 2,), ACCEPT)  # (B, L + 2): position keys, token, accept
            pos = (u[:, :-2] * free).argmax(-1)  # (B,) a uniform free position
            tok = clean[(u[:, -2] * clean.numel()).long().clamp(max=clean.numel() - 1)]  # (B,)
            prop = x.scatter(1, pos[:, None], tok[:, None])  # (B, L)
            new = scored(reward, prop, den, group, budget) + coupling(prop, z, alpha, clean.numel())  # (B,)
            accept = torch.log(u[:, -1]) < new - cur  # (B,) symmetric proposal
            accept &= free.any(-1)  # a row without free positions stays
            x = torch.where(accept[:, None], prop, x)
            cur = torch.where(accept, new, cur)
        return x
