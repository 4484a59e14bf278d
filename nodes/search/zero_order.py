"""search.zero_order: zero-order search, candidates are perturbations of a pivot noise; move to the best."""
from __future__ import annotations

import math
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
from .particles import child_ids


@node("search.zero_order", version=1)
class ZeroOrder(Node):
    """Implements zero-order search over the initial noise (Ma et al. 2025, Sec. 3.1 "zero-order search")."""

    uses_seed: ClassVar[bool] = True
    candidates: int = Field(4, ge=1, description="N: perturbed noises evaluated per pivot and iteration")
    radius: float = Field(0.3, gt=0, le=1, description="lambda: candidate noise = sqrt(1-lambda^2) pivot + "
                          "lambda fresh noise (stays on the N(0, sigma_max^2) prior); 1 = random search")
    iterations: int = Field(4, ge=0, description="pivot updates; 0 returns a plain run of the latent")
    max_nfe: int | None = Field(None, ge=1, description="particle-NFE budget per group: stop iterating once "
                                "the next iteration would exceed it (the pivot's own run always happens)")
    max_batch: int | None = Field(None, ge=1, description="largest denoiser batch (calls are chunked)")

    def run(self, denoise: Denoiser, sigmas: Sigmas, sampler: Sampler, latent: torch.Tensor, reward: Reward,
            ctx: NodeContext) -> torch.Tensor:
        """The final pivot's sample of each latent row (G, ...): each row is its own group."""
        _, groups = layout(latent, 1)
        dev, n = latent.device, self.candidates
        budget = Budget(groups, max_particle_nfe=self.max_nfe)
        group = torch.arange(groups, device=dev)  # (G,)
        check_renoise(sampler, denoise)
        den = BudgetDenoiser(denoise, budget, group, self.max_batch)
        pivot, pid = latent, group.clone()  # (G, ...) noise (scaled by sigma_max) and its particle ids (G,)
        x = run_to_end(sampler, den, sampler.init(pivot, sigmas, particle=pid), ctx.noise, ctx).x  # (G, ...)
        r = scored(reward, x, group, budget)  # (G,)
        cost, trace, done = int(budget.particle_nfe.max()), [float(r.mean())], 0
        cand_group = group.repeat_interleave(n)  # (G*N,)
        keep = math.sqrt(1.0 - self.radius ** 2)
        for it in range(self.iterations):
            if self.max_nfe is not None and int(budget.particle_nfe.max()) + cost * n > self.max_nfe:
                break
            ids = child_ids(cand_group, it, torch.arange(n, device=dev).repeat(groups))  # (G*N,) fresh keys
            eps = ctx.noise.normal(ids, 0, tuple(latent.shape[1:]), dtype=latent.dtype, device=dev)  # (G*N, ...)
            cand = keep * pivot.repeat_interleave(n, 0) + self.radius * float(sigmas.values[0]) * eps  # (G*N, ...)
            den.group = cand_group
            xc = run_to_end(sampler, den, sampler.init(cand, sigmas, particle=ids), ctx.noise, ctx).x  # (G*N, ...)
            rc = scored(reward, xc, cand_group, budget).reshape(groups, n)  # (G, N)
            top, arg = rc.max(1)  # (G,), (G,)
            pick = group * n + arg.to(dev)  # (G,) flat index of each group's best candidate
            better = (top > r).to(dev)  # (G,) move the pivot only on improvement
            pivot = torch.where(better.view(-1, *[1] * (latent.ndim - 1)), cand[pick], pivot)  # (G, ...)
            x = torch.where(better.view(-1, *[1] * (x.ndim - 1)), xc[pick], x)  # (G, ...)
            pid = torch.where(better, ids[pick], pid)  # (G,)
            r = torch.where(better.to(r.device), top, r)  # (G,)
            trace.append(float(r.mean()))
            done += 1
        ctx.add_nfe(budget.calls)
        ctx.record(**budget.report(), iterations_run=done, best_reward_trace=trace, best_reward_mean=trace[-1])
        return x  # (G, ...)
