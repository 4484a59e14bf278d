"""search.tds: twisted SMC with a differentiable reward (TDS, Wu et al. 2023), target p(x) exp(lam r(x)).

Twisting function at level sigma: p~(x) = exp(lam r(D(x, sigma))), the reward of the Tweedie x0 estimate.
Proposal: the DDPM kernel of weighted.kernel (mean m, variance v) shifted by v grad_x log p~:
q(x' | x) = N(m + v grad log p~(x), v). Incremental weight of a step x -> x' (Wu et al., eq. 8):
    w = p(x' | x) p~(x') / (p~(x) q(x' | x)),  log p/q = -v |grad|^2 / 2 - sqrt(v) grad . z,
with x' = m + v grad + sqrt(v) z; at sigma = 0 the twist is exp(lam r(x)) itself, so the product of the
weights along a lineage is exp(lam r(x0)) p(x_{0:T}) / q(x_{0:T}): asymptotically exact as particles grow.
proposal='prior' keeps the twisted weights but proposes from the model (FK steering with the difference
potential on the same kernel): the baseline TDS is measured against. One denoiser call per step gives both
the kernel's x0 and, through autograd, the twist's gradient; the backward pass through the denoiser is
charged as one more evaluation (as guidance.reward_gradient counts it), so 'twisted' costs 2 NFE per step."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.sigmas import Sigmas
from ..core.state import bcast
from ..rewards.reward import Reward
from .budget import Budget, BudgetDenoiser
from .common import layout, require_plain, scored
from .particles import Particles
from .resample import ResamplingSearch
from .weighted import kernel, report, resample_step, select, start


@node("search.tds", version=1)
class Tds(ResamplingSearch):
    """Implements Twisted Diffusion Sampler (Wu et al. 2023, Alg. 1): SMC with a reward-gradient twisted proposal."""

    lam: float = Field(1.0, description="lambda: the target is p(x) exp(lambda r(x))")
    proposal: Literal["twisted", "prior"] = Field("twisted", description="'twisted': kernel mean shifted by the "
                                                  "twist's gradient; 'prior': the model's kernel (no gradient)")

    def run(self, denoise: Denoiser, sigmas: Sigmas, latent: torch.Tensor, reward: Reward,
            ctx: NodeContext) -> torch.Tensor:
        """Samples of p(x) exp(lam r(x)): (B, ...) for keep='all', (G, ...) for keep='one'; latent ~ N(0, sigma^2)."""
        return self.twist(denoise, sigmas, latent, reward, ctx)[0]

    def twist(self, denoise: Denoiser, sigmas: Sigmas, latent: torch.Tensor, reward: Reward,
              ctx: NodeContext) -> tuple[torch.Tensor, Particles]:
        """The selected samples and the final weighted particles (before the final draw)."""
        require_plain("search.tds", denoise)
        group, groups = layout(latent, self.particles)
        budget, seed = Budget(groups), ctx.noise.seed
        den = BudgetDenoiser(denoise, budget, group, self.max_batch)
        p = Particles.start(start(latent, sigmas), group, groups)
        trigger = self.trigger()
        ell_prev = torch.zeros(p.batch, dtype=torch.float64, device=latent.device)  # (B,) log twist at x
        total, resamplings = sigmas.steps, 0
        for k in range(total):
            ctx.check_cancelled()
            x0, ell, grad = self.log_twist(den, p, reward, budget)  # (B, ...), (B,), (B, ...)
            p = p.reweight(ell - ell_prev)
            p, (x0, ell, grad), n = resample_step(p, trigger, self.resampler, seed, k, float(sigmas.values[k]),
                                                  (x0, ell, grad))
            mean, std = kernel(p.state, x0)  # (B, ...), (B,)
            z = ctx.noise.normal(p.state.particle, k, tuple(x0.shape[1:]), dtype=x0.dtype, device=x0.device)
            v = bcast(std.to(x0.dtype), x0) ** 2  # (B, 1, ...)
            flat = grad.reshape(p.batch, -1).double()  # (B, D)
            log_pq = -0.5 * std ** 2 * flat.pow(2).sum(1) - std * (flat * z.reshape(p.batch, -1).double()).sum(1)
            p = p.reweight(log_pq).with_state(p.state.advance(x=mean + v * grad + v.sqrt() * z, denoised=x0))
            ell_prev, resamplings = ell, resamplings + n
            ctx.progress(k + 1, total)
        r = scored(reward, p.state.x, p.group, budget).to(latent.device)  # (B,) the exact final twist
        p = p.reweight(self.lam * r - ell_prev)
        out = select(p, self.keep, self.resampler, seed)
        report(ctx, budget, p, resamplings)
        return out, p

    def log_twist(self, den: BudgetDenoiser, p: Particles, reward: Reward, budget: Budget
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x0 = D(x) (B, ...), log twist lam r(x0) (B,) float64 and its gradient in x (B, ...) (zero for 'prior')."""
        st, den.group = p.state, p.group
        if self.proposal == "prior":
            x0 = den(st.x, st.sigma)  # (B, ...)
            return x0, self.lam * scored(reward, x0, p.group, budget), torch.zeros_like(x0)
        with torch.enable_grad():
            x = st.x.detach().requires_grad_(True)
            x0 = den(x, st.sigma)  # (B, ...)
            r = reward(x0)  # (B,)
            if not r.requires_grad:
                raise NodeError(f"search.tds proposal 'twisted' needs a reward differentiable through the denoiser; "
                                f"{type(reward).__name__} (or the model) returned no gradient; use proposal 'prior'")
            grad, = torch.autograd.grad(self.lam * r.sum(), x)  # (B, ...)
        budget.charge_denoiser(p.group, -(-p.batch // (self.max_batch or p.batch)))  # the backward pass
        if r.shape != x0.shape[:1]:
            raise NodeError(f"the reward returned shape {tuple(r.shape)} for {x0.shape[0]} samples; a Reward must "
                            f"return one number per sample, (B,)")
        budget.charge_reward(p.group)
        return x0.detach(), self.lam * r.detach().to(torch.float64), grad.detach()
