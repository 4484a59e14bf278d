"""Shared plumbing of the search strategies: group layout, the batched stepping loop, reward calls."""
from __future__ import annotations

import torch

from ...graph.errors import NodeError
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.state import State
from ..rewards.reward import Reward
from .budget import Budget, BudgetDenoiser


def require_noise(kind: str, sampler: Sampler, copies: int, why: str) -> None:
    """Reject a noise-free sampler where a strategy's copies must differ (`copies` > 1)."""
    if copies > 1 and not sampler.draws_noise:
        raise NodeError(f"{kind} needs a sampler that draws noise ({why} of a deterministic solver are identical); "
                        f"got {type(sampler).__name__} with these parameters, use e.g. sampler.euler_ancestral "
                        f"(eta > 0)")


def require_plain(kind: str, *denoisers: Denoiser) -> None:
    """Reject a denoiser with a separate re-noise estimate (CFG++) where the strategy's own kernel ignores it."""
    if any(d.separate_renoise for d in denoisers):
        raise NodeError(f"{kind} steps with its own kernel, which would ignore guidance.cfg_pp's re-noise estimate; "
                        f"use guidance.cfg (or a strategy that takes a sampler, with sampler.euler / dpmpp_2m)")


def layout(latent: torch.Tensor, n: int, what: str = "particles") -> tuple[torch.Tensor, int]:
    """Group ids (B,) for a latent (B, ...) cut into consecutive groups of n, and the number of groups."""
    if latent.ndim < 2 or not latent.is_floating_point():
        raise NodeError(f"input 'latent' must be a floating-point (B, ...) tensor, got {latent.dtype} "
                        f"of shape {tuple(latent.shape)}")
    b = latent.shape[0]
    if b % n:
        raise NodeError(f"latent batch {b} is not a multiple of {what}={n}; set latent.noise 'batch' to "
                        f"{what} x groups, e.g. {n * max(1, b // n)}")
    return torch.arange(b, device=latent.device) // n, b // n


def scored(reward: Reward, x0: torch.Tensor, group: torch.Tensor, budget: Budget) -> torch.Tensor:
    """Reward (B,) float64 of x0 (B, ...), checked for shape and charged to the budget."""
    r = reward(x0)
    if r.shape != x0.shape[:1]:
        raise NodeError(f"the reward returned shape {tuple(r.shape)} for {x0.shape[0]} samples; a Reward must "
                        f"return one number per sample, (B,)")
    budget.charge_reward(group)
    return r.detach().to(torch.float64)


def run_to_end(sampler: Sampler, den: BudgetDenoiser, state: State, noise: NoiseSource,
               ctx: NodeContext | None = None) -> State:
    """Step all particles in lockstep to the end of the schedule (one batched call per stage)."""
    total = state.sigmas.numel() - 1
    for i in range(int(state.step.min()), total):
        if ctx is not None:
            ctx.check_cancelled()
        state = sampler.step(den, state, noise)
        if ctx is not None:
            ctx.progress(i + 1, total)
    return state


def first_of_groups(group: torch.Tensor, groups: int) -> torch.Tensor:
    """Index (G,) of the first particle of each group."""
    b = group.shape[0]
    pos = torch.arange(b, device=group.device)
    return torch.full((groups,), b, dtype=torch.long, device=group.device).scatter_reduce(0, group, pos, "amin")


def tweedie_reward(den: BudgetDenoiser, state: State, reward: Reward, group: torch.Tensor,
                   budget: Budget) -> torch.Tensor:
    """r(E[x0 | x_t]) (B,) float64 at each particle's current level; at sigma 0 the reward of x itself."""
    sigma = state.sigma  # (B,)
    if float(sigma.max()) == 0.0:
        return scored(reward, state.x, group, budget)
    den.group = group
    return scored(reward, den(state.x, sigma), group, budget)  # (B,) one batched call for the x0 estimates


def top_per_group(v: torch.Tensor, groups: int, k: int) -> torch.Tensor:
    """Flat indices (G*k,) of the k largest of v (G*m,) within each consecutive block of m, best first."""
    m = v.numel() // groups
    top = v.reshape(groups, m).topk(k, 1).indices  # (G, k)
    return (top + torch.arange(groups, device=v.device)[:, None] * m).flatten()  # (G*k,)
