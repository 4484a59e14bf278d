"""discrete_sampler.tau_leaping: tau-leaping of the reverse masked CTMC (Campbell et al. 2022, "A
Continuous Time Framework for Discrete Denoising Models").

The reverse rate of a masked position at time t to token v is lambda(t) p(x0 = v | x_t), with
lambda(t) = -alpha'(t) / (1 - alpha(t)); clean tokens have rate 0 (absorbing noise never changes
them). A leap from t to s = t - tau freezes the rates at t, so a masked position jumps (its
Poisson count is >= 1) with probability 1 - exp(-tau lambda(t)) and lands on its first jump's token,
drawn from p(x0 | x_t): having jumped, it sits in a clean state whose rates are 0. The last leap
(s = 0) decodes every position. The exact step (discrete_sampler.ancestral) unmasks with
(alpha(s) - alpha(t)) / (1 - alpha(t)) instead; the two agree to first order in tau."""
from __future__ import annotations

import torch

from ...api import node
from ..schedule import MaskSchedule
from .ancestral import Ancestral
from .unmasking import dalpha_dt


@node("discrete_sampler.tau_leaping", version=1)
class TauLeaping(Ancestral):
    """Tau-leaping with rates frozen over each leap: jump w.p. 1 - exp(-tau lambda(t)) (Campbell et al. 2022)."""

    def jump_probability(self, schedule: MaskSchedule, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        rate = -dalpha_dt(schedule, t) / (1.0 - schedule.alpha(t)).clamp(min=1e-300)  # (B,) lambda(t)
        p = -torch.expm1(-(t - t_next) * rate)  # (B,)
        return torch.where(t_next <= 0, torch.ones_like(p), p.clamp(0.0, 1.0))
