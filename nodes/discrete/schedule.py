"""MaskSchedule: the noise schedule of a discrete diffusion, the token analogue of Sigmas.

alpha(t) is the probability that a token is still clean at time t in [0, 1] (alpha(0) = 1, alpha
decreasing, alpha(1) ~ 0): an absorbing process masks it with probability 1 - alpha(t), a uniform
one replaces it by a uniformly drawn token (Austin et al. 2021, D3PM; Sahoo et al. 2024, MDLM).
`times` is the sampler's grid from 1 down to 0 in `steps` equal steps of t; the schedule decides how
much is decoded at each."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from pydantic import Field

from ..api import Node

F64 = torch.float64


class MaskSchedule(ABC):
    """alpha(t), its inverse, and the time grid of `steps` steps."""

    def __init__(self, steps: int):
        self.steps = steps
        self.times = torch.linspace(1.0, 0.0, steps + 1, dtype=F64)  # (S + 1,) from 1 to 0

    @abstractmethod
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """P(clean at t) (...) float64 for times t (...) in [0, 1]."""

    @abstractmethod
    def time_of(self, alpha: torch.Tensor) -> torch.Tensor:
        """The time t (...) in [0, 1] at which alpha(t) = alpha (...) (clamped into [0, 1])."""

    def unmask_probability(self, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        """(...) P(a token masked at t is clean at t_next < t) = (alpha(s) - alpha(t)) / (1 - alpha(t));
        exactly 1 at t_next = 0 (the last step decodes everything, whatever alpha(0))."""
        a_t, a_s = self.alpha(t), self.alpha(t_next)
        p = ((a_s - a_t) / (1.0 - a_t).clamp(min=1e-300)).clamp(0.0, 1.0)
        return torch.where(t_next <= 0, torch.ones_like(p), p)


class MaskScheduleNode(Node):
    """Base of the mask-schedule nodes: a step count, a run() building the schedule."""

    steps: int = Field(32, ge=1, le=100_000, description="sampler steps on a uniform grid of t from 1 to 0")
