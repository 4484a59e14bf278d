"""Shared math of the VP-family solvers (DDIM, DDPM, UniPC, DEIS, LCM), written in sigma space.

diffusers' VP schedulers keep x_vp = alpha * x0 + sigma_vp * eps; ours keep x = x0 + sigma * eps.
The two are one state seen two ways: alpha = 1 / sqrt(1 + sigma^2), sigma_vp = sigma * alpha,
x_vp = alpha * x, and the log-SNR lambda = log(alpha / sigma_vp) = -log(sigma). Every update
of the exponential-integrator solvers is linear in x, so dividing a VP formula by alpha_next
gives the sigma-space one: the alpha factors cancel and only sigma ratios and lambda steps remain.

Multistep solvers keep their past model outputs in State.history, newest first, and read the
noise levels of those outputs from the shared schedule at (step - k), so `state[idx]` carries
everything a particle needs."""
from __future__ import annotations

from typing import Literal

import torch

from ..core.state import State

LowerOrderFinal = Literal["always", "under_15_steps", "never"]
LOWER_ORDER_FINAL_DOC = (
    "'always': order min(p, steps left) (original UniPC and diffusers' UniPC); 'under_15_steps': with "
    "fewer than 15 steps the last step is first order and the one before at most second "
    "(diffusers' DPM-Solver and DEIS); 'never'. Any step to sigma = 0 is first order (x = D).")


def vp_alpha(sigma: torch.Tensor) -> torch.Tensor:
    """alpha = 1 / sqrt(1 + sigma^2): the VP signal scale of a noise level (same shape)."""
    return torch.rsqrt(1 + sigma ** 2)


def effective_order(step: torch.Tensor, sigmas: torch.Tensor, order: int, policy: LowerOrderFinal) -> torch.Tensor:
    """The order (B,) int64 of the multistep update from sigmas[step] to sigmas[step + 1].

    Warm-up: at most step + 1 (the outputs seen so far). Then the lower-order-final policy; a
    step to sigma = 0 is always first order, because lambda = +inf there and every higher-order
    correction of a lambda-space multistep method is 0 * inf."""
    steps = sigmas.numel() - 1
    o = torch.clamp(step + 1, max=order)  # (B,)
    if policy == "always":
        o = torch.minimum(o, steps - step)
    elif policy == "under_15_steps" and steps < 15:
        o = torch.where(step == steps - 1, 1, torch.where(step == steps - 2, o.clamp(max=2), o))
    return torch.where(sigmas[(step + 1).clamp(max=steps)] == 0, 1, o).clamp(min=1)


def past_sigmas(state: State, count: int) -> list[torch.Tensor]:
    """sigmas[step - k] (B,) for k = 1..count (clamped at step 0: only read where the order allows)."""
    return [state.sigmas[(state.step - k).clamp(min=0)] for k in range(1, count + 1)]


def push(history: tuple[torch.Tensor, ...], newest: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A history tuple with `newest` first and the oldest entry dropped (same length)."""
    return (newest, *history[:-1])
