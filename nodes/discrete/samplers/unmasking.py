"""Shared by the step-grid masked samplers (ancestral, tau-leaping): one categorical per masked
position over {stay masked} U tokens, as MDLM draws it (Sahoo et al. 2024), with its cache of
p(x0 | x_t) while no token changed, and the time derivative of a schedule's alpha(t)."""
from __future__ import annotations

import torch

from ...core.noise import NoiseSource
from ..denoiser import DiscreteDenoiser
from ..draws import TOKEN, Precision, categorical
from ..schedule import MaskSchedule
from ..state import DiscreteState


def posterior(den: DiscreteDenoiser, state: DiscreteState, reuse: bool) -> torch.Tensor:
    """(B, L, V) log p(x0 | x_t): the cached one in history (valid flag (B,), log-probs (B, L, V))
    for rows whose tokens did not change since it was computed, the denoiser's for the others."""
    if not (reuse and state.history):
        return den(state.tokens, state.t)
    valid, cached = state.history  # (B,), (B, L, V)
    if bool(valid.all()):
        return cached
    stale = (~valid).nonzero().flatten()  # (K,)
    fresh = den(state.tokens[stale], state.t[stale])  # (K, L, V)
    out = cached.clone()
    out[stale] = fresh.to(out.dtype)
    return out


def unmask_step(den: DiscreteDenoiser, state: DiscreteState, t_next: torch.Tensor, jump: torch.Tensor,
                noise: NoiseSource, precision: Precision, reuse: bool) -> DiscreteState:
    """Move every row to t_next (B,): each masked position becomes clean with probability jump (B,),
    its token from p(x0 | x_t), in ONE categorical over {mask} U tokens (keys: particle, step, TOKEN)."""
    mask = den.mask_id
    logp = posterior(den, state, reuse)  # (B, L, V)
    log_jump = torch.log(jump.to(torch.float64))[:, None, None]  # (B, 1, 1)
    log_stay = torch.log1p(-jump.to(torch.float64))[:, None]  # (B, 1)
    race = logp.to(torch.float64) + log_jump  # (B, L, V); the mask id stays -inf there
    race[..., mask] = log_stay
    draw = categorical(noise, race, state.particle, state.step, TOKEN, precision)  # (B, L)
    update = state.masked(mask) & ~state.fixed & (draw != mask)  # (B, L)
    nxt = state.reveal(update, draw, t_next)
    if not reuse:
        return nxt
    return nxt.replace(history=(~update.any(-1), logp))


def dalpha_dt(schedule: MaskSchedule, t: torch.Tensor) -> torch.Tensor:
    """(B,) float64 d alpha / dt at times t (B,), by autograd through the schedule's alpha."""
    with torch.enable_grad():
        x = t.detach().to(torch.float64).clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(schedule.alpha(x).sum(), x)
    return grad.detach()


def next_times(schedule: MaskSchedule, state: DiscreteState) -> torch.Tensor:
    """(B,) float64 the grid time after each row's current step."""
    times = schedule.times.to(state.device)  # (S + 1,)
    return times[(state.step + 1).clamp(max=schedule.steps)]

