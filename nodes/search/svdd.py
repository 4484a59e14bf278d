"""search.svdd: soft value-based decoding, M candidates per step chosen by exp(value / alpha)."""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.sampler import Sampler, check_renoise
from ..core.sigmas import Sigmas
from ..core.state import State
from ..rewards.reward import Reward
from .budget import Budget, BudgetDenoiser
from .common import layout, require_noise, tweedie_reward
from .particles import Particles
from .resample import resample_generator


@node("search.svdd", version=1)
class Svdd(Node):
    """Implements SVDD-PM (Li et al. 2024, Alg. 1): M transition draws per step, one kept w.p. ~ exp(v/alpha)."""

    uses_seed: ClassVar[bool] = True
    candidates: int = Field(8, ge=1, description="M: candidates drawn per particle and step")
    alpha: float = Field(1.0, ge=0, description="temperature: target ~ p(x) exp(r(x)/alpha); 0 = greedy argmax")
    max_batch: int | None = Field(None, ge=1, description="largest denoiser batch (calls are chunked)")

    def run(self, denoise: Denoiser, sigmas: Sigmas, sampler: Sampler, latent: torch.Tensor, reward: Reward,
            ctx: NodeContext) -> torch.Tensor:
        """One steered sample per latent row (B, ...)."""
        require_noise("search.svdd", sampler, self.candidates, "candidates")
        layout(latent, 1)
        b, m, noise, seed = latent.shape[0], self.candidates, ctx.noise, ctx.noise.seed
        budget = Budget(1)
        check_renoise(sampler, denoise)
        den = BudgetDenoiser(denoise, budget, torch.zeros(b * m, dtype=torch.long, device=latent.device),
                             self.max_batch)
        parents = torch.arange(b, device=latent.device).repeat_interleave(m)  # (B*M,)
        p = Particles.start(sampler.init(latent, sigmas))
        total = sigmas.values.numel() - 1
        for k in range(total):
            ctx.check_cancelled()
            kids = p.fork(parents, k).state if m > 1 else p.state  # (B*M) children with fresh noise keys
            den.group = torch.zeros(kids.batch, dtype=torch.long, device=latent.device)
            kids = sampler.step(den, kids, noise)
            v = self.value(den, kids, reward, budget)  # (B*M,)
            choice = self.choose(v.reshape(b, m), resample_generator(seed, k))  # (B,)
            pick = torch.arange(b, device=latent.device) * m + choice.to(latent.device)  # (B,)
            p = Particles.start(kids[pick]) if m > 1 else p.with_state(kids)
            ctx.progress(k + 1, total)
        ctx.add_nfe(budget.calls)
        ctx.record(**budget.report(), reward_mean=float(reward(p.state.x).double().mean()))
        return p.state.x  # (B, ...)

    @staticmethod
    def value(den: BudgetDenoiser, kids: State, reward: Reward, budget: Budget) -> torch.Tensor:
        """v = r(E[x0 | x_{t-1}]) (B*M,): the posterior-mean value; at sigma 0 the reward of x itself."""
        return tweedie_reward(den, kids, reward, torch.zeros(kids.batch, dtype=torch.long), budget)

    def choose(self, v: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Index (B,) of the kept candidate per row of v (B, M): categorical exp(v/alpha), or argmax for alpha 0."""
        return soft_choice(v, self.alpha, gen)


def soft_choice(v: torch.Tensor, alpha: float, gen: torch.Generator) -> torch.Tensor:
    """SVDD's selection (Li et al. 2024, Alg. 1 line 5): index (B,) per row of values v (B, M) drawn
    w.p. ~ exp(v / alpha), argmax for alpha 0; a row whose values are all -inf chooses uniformly."""
    v = v.cpu().to(torch.float64)
    dead = torch.isneginf(v).all(1, keepdim=True)  # (B, 1)
    v = torch.where(dead, torch.zeros_like(v), v)  # (B, M)
    if alpha == 0:
        return v.argmax(1)
    probs = torch.softmax(v / alpha, 1)  # (B, M)
    return torch.multinomial(probs, 1, generator=gen).squeeze(1)  # (B,)
