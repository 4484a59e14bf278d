"""Shared plumbing of the weighted-SDE strategies (search.fkc, search.tds): the Gaussian reverse kernel
they step with, the resampling step and the final selection.

The kernel integrates the reverse SDE in variance time s = sigma^2, dx = c (x0 - x) / s dtau + dW_tau
(tau = -s): an exponential integrator, exact for the linear SDE with x0 frozen over the step, or (when the
state carries the previous x0 in its history) with x0 affine in log s. With c = 1 and a frozen x0 it is the
DDPM ancestral step (search.tds); c = a + b is the drift of a target p1^a p2^b (search.fkc); a step to
sigma' = 0 lands on x0."""
from __future__ import annotations

import torch

from ..core.context import NodeContext
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .budget import Budget
from .common import first_of_groups
from .particles import Particles
from .resample import Method, Trigger, resample, resample_generator, resample_indices

FINAL_STEP = -3  # generator key of the final draw, distinct from every solver step (as search.smc)


def start(x: torch.Tensor, sigmas: Sigmas) -> State:
    """The state at sigmas[0] of latent x (B, ...); particle ids 0..B-1 (as Sampler.init)."""
    b = x.shape[0]
    return State(x=x, sigmas=sigmas.values.to(device=x.device, dtype=x.dtype),
                 step=torch.zeros(b, dtype=torch.long, device=x.device), particle=torch.arange(b, device=x.device))


def kernel(state: State, x0: torch.Tensor, c: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (B, ...) and std (B,) of the step s -> s' (s = sigma^2, r = s' / s, rho = log r) of
    dx = c (x0 - x) / s dtau + dW_tau:  x' = x0 + (x - x0) r^c + std z,  std^2 = s' (1 - r^(2c - 1)) / (2c - 1),
    exact for x0 frozen; with the previous x0 in state.history, x0 is taken affine in log s through both
    (the 2M idea of Lu et al. 2022b), adding slope (c rho + 1 - r^c) / c; first order on steps to sigma 0."""
    s, s_next = state.sigma.double() ** 2, state.sigma_next.double() ** 2  # (B,)
    rho = torch.log(s_next / s)  # (B,) -inf at sigma' = 0
    k = 2 * c - 1
    frac = -rho if abs(k) < 1e-9 else -torch.expm1(k * rho) / k  # (B,)
    var = torch.where(s_next > 0, s_next * frac, torch.zeros_like(s))  # (B,)
    keep = torch.exp(c * rho)  # (B,) r^c, 0 at sigma' = 0
    mean = x0 + (state.x - x0) * bcast(keep.to(x0.dtype), x0)  # (B, ...)
    if state.history:
        s_prev = state.sigma_prev.double() ** 2  # (B,)
        ok = (s_prev > s) & (s_next > 0)  # (B,) a previous step exists and this one does not end at 0
        w = torch.where(ok, (c * rho + 1 - keep) / c / torch.log(torch.where(ok, s / s_prev, 0.5)), 0.0)  # (B,)
        mean = mean + (x0 - state.history[0]) * bcast(w.to(x0.dtype), x0)
    return mean, var.sqrt()  # (B, ...), (B,)


def step_increment(state: State) -> torch.Tensor:
    """Variance-time increment d = sigma^2 - sigma'^2 (B,) float64 of each particle's next step."""
    return state.sigma.double() ** 2 - state.sigma_next.double() ** 2  # (B,)


def score(x0: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """grad log p_sigma(x) = (D(x) - x) / sigma^2 (B, ...) from the x0 estimate (Tweedie)."""
    return (x0 - x) / bcast(sigma.to(x.dtype) ** 2, x)  # (B, ...)


def move(state: State, x0: torch.Tensor, z: torch.Tensor, c: float = 1.0) -> State:
    """One kernel step with standard normals z (B, ...); x0 becomes the history of the next (second-order) step."""
    mean, std = kernel(state, x0, c)  # (B, ...), (B,)
    return state.advance(x=mean + bcast(std.to(mean.dtype), mean) * z, denoised=x0, history=(x0,))


def sq_norm(v: torch.Tensor) -> torch.Tensor:
    """|v|^2 per row (B,) float64 of v (B, ...)."""
    return v.reshape(v.shape[0], -1).double().pow(2).sum(1)  # (B,)


def resample_step(p: Particles, trigger: Trigger, method: Method, seed: int, k: int, sigma: float,
                  extra: tuple[torch.Tensor, ...] = ()) -> tuple[Particles, tuple[torch.Tensor, ...], int]:
    """Resample the groups the trigger marks at step k, level sigma; the particles, gathered extras, count."""
    due = trigger.groups_due(p, k, sigma)  # (G,)
    p, extra = resample(p, method, resample_generator(seed, k), k, due, extra)
    return p, extra, int(due.sum())


def select(p: Particles, keep: str, method: Method, seed: int) -> torch.Tensor:
    """Final samples: every particle after one resampling (B, ...) ('all') or one weighted draw per group
    (G, ...) ('one')."""
    gen = resample_generator(seed, FINAL_STEP)
    if keep == "one":
        idx = resample_indices(p.log_w, p.group, p.groups, "multinomial", gen)  # (B,)
        return p.state.x[idx[first_of_groups(p.group, p.groups)]]  # (G, ...)
    return resample(p, method, gen, int(p.state.step.max()), None)[0].state.x  # (B, ...)


def report(ctx: NodeContext, budget: Budget, p: Particles, resamplings: int, **extra: float) -> None:
    """NFE to the context; budget, resamplings, final ESS and the normaliser estimate to the run report."""
    ctx.add_nfe(budget.calls)
    ctx.record(**budget.report(), resamplings=resamplings, final_ess_mean=float(p.ess().mean()),
               log_z_mean=float((p.log_norm() - torch.log(p.sizes().double())).mean()), **extra)
