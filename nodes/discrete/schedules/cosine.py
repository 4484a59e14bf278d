"""mask_schedule.cosine: alpha(t) = cos(pi t / 2), MaskGIT's cosine mask ratio (Chang et al. 2022)."""
from __future__ import annotations

import math

import torch

from ...api import node
from ..schedule import MaskSchedule, MaskScheduleNode


class CosineSchedule(MaskSchedule):
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cos(0.5 * math.pi * t.to(torch.float64))

    def time_of(self, alpha: torch.Tensor) -> torch.Tensor:
        return (torch.arccos(alpha.to(torch.float64).clamp(0.0, 1.0)) * (2.0 / math.pi)).clamp(0.0, 1.0)


@node("mask_schedule.cosine", version=1)
class Cosine(MaskScheduleNode):
    """alpha(t) = cos(pi t / 2): few tokens decoded early, many late (Chang et al. 2022, MaskGIT)."""

    def run(self) -> MaskSchedule:
        return CosineSchedule(self.steps)
