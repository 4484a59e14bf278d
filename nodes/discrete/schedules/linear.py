"""mask_schedule.linear: alpha(t) = 1 - t (Austin et al. 2021's 1/(T - t + 1) schedule in continuous time; MDLM)."""
from __future__ import annotations

import torch

from ...api import node
from ..schedule import MaskSchedule, MaskScheduleNode


class LinearSchedule(MaskSchedule):
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - t.to(torch.float64)

    def time_of(self, alpha: torch.Tensor) -> torch.Tensor:
        return (1.0 - alpha.to(torch.float64)).clamp(0.0, 1.0)


@node("mask_schedule.linear", version=1)
class Linear(MaskScheduleNode):
    """alpha(t) = 1 - t: a constant expected number of tokens decoded per step (Sahoo et al. 2024, MDLM)."""

    def run(self) -> MaskSchedule:
        return LinearSchedule(self.steps)
