"""search.smc: Feynman-Kac steering, SMC over reward potentials of the Tweedie x0 estimate."""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.sampler import Sampler, check_renoise
from ..core.sigmas import Sigmas
from ..rewards.reward import Reward
from .budget import Budget, BudgetDenoiser
from .common import first_of_groups, layout, require_noise, scored
from .particles import Particles
from .resample import ResamplingSearch, resample, resample_generator, resample_indices

FINAL_STEP = -3  # generator key of the final draw, distinct from every solver step


@node("search.smc", version=1)
class Smc(ResamplingSearch):
    """Implements FK steering (Singhal et al. 2025, Alg. 1): SMC with reward potentials and a final correction."""

    lam: float = Field(1.0, description="lambda: the target is p(x) exp(lambda r(x))")
    potential: Literal["difference", "max", "sum", "current"] = Field(
        "difference", description="G_t: exp(lam (r_t - r_{t+1})), exp(lam max_s r_s), exp(lam sum_s r_s), exp(lam r_t)")

    def run(self, denoise: Denoiser, sigmas: Sigmas, sampler: Sampler, latent: torch.Tensor, reward: Reward,
            ctx: NodeContext) -> torch.Tensor:
        """Samples of the tilted target: (B, ...) for keep='all', (G, ...) for keep='one'."""
        x, _ = self.steer(denoise, sigmas, sampler, latent, reward, ctx)
        return x

    def steer(self, denoise: Denoiser, sigmas: Sigmas, sampler: Sampler, latent: torch.Tensor, reward: Reward,
              ctx: NodeContext) -> tuple[torch.Tensor, Particles]:
        """The selected samples and the final weighted particles (before the final draw)."""
        require_noise("search.smc", sampler, self.particles, "resampled copies")
        group, groups = layout(latent, self.particles)
        noise, seed = ctx.noise, ctx.noise.seed
        budget = Budget(groups)
        check_renoise(sampler, denoise)
        den = BudgetDenoiser(denoise, budget, group, self.max_batch)
        p = Particles.start(sampler.init(latent, sigmas), group, groups)
        trigger = self.trigger()
        zeros = torch.zeros(p.batch, dtype=torch.float64, device=latent.device)
        acc, prev, run_max, run_sum = zeros, zeros, torch.full_like(zeros, -math.inf), zeros  # (B,) each
        total, resamplings = sigmas.values.numel() - 1, 0
        for k in range(total):
            ctx.check_cancelled()
            den.group = p.group
            p = p.with_state(sampler.step(den, p.state, noise))
            ctx.progress(k + 1, total)
            if k == total - 1:
                break
            if p.state.denoised is None:
                raise NodeError(f"{type(sampler).__name__} does not report its x0 estimate (state.denoised); "
                                f"search.smc needs it for the reward potentials")
            r = scored(reward, p.state.denoised, p.group, budget).to(latent.device)  # (B,) r of Tweedie x0
            if self.potential == "difference":
                log_g, prev = self.lam * (r - prev), r
            elif self.potential == "max":
                run_max = torch.maximum(run_max, r)
                log_g = self.lam * run_max
            elif self.potential == "sum":
                run_sum = run_sum + r
                log_g = self.lam * run_sum
            else:
                log_g = self.lam * r
            p, acc = p.reweight(log_g), acc + log_g  # acc: log product of potentials along each lineage
            due = trigger.groups_due(p, k, float(sigmas.values[k + 1]))  # (G,)
            resamplings += int(due.sum())
            p, (acc, prev, run_max, run_sum) = resample(p, self.resampler, resample_generator(seed, k), k, due,
                                                        (acc, prev, run_max, run_sum))
        r = scored(reward, p.state.x, p.group, budget).to(latent.device)  # (B,) reward of the final samples
        p = p.reweight(self.lam * r - acc)  # final correction: the lineage's product is exp(lam r(x0))
        gen = resample_generator(seed, FINAL_STEP)
        final_ess = p.ess()
        if self.keep == "one":
            idx = resample_indices(p.log_w, p.group, groups, "multinomial", gen)
            out = p.state.x[idx[first_of_groups(p.group, groups)]]  # (G, ...)
        else:
            out = resample(p, self.resampler, gen, total, None)[0].state.x  # (B, ...)
        ctx.add_nfe(budget.calls)
        ctx.record(**budget.report(), resamplings=resamplings, final_ess_mean=float(final_ess.mean()),
                   log_z_mean=float((p.log_norm() - torch.log(p.sizes().double())).mean()))
        return out, p
