"""schedule.simple: evenly strided entries of a discrete model's sigma table (ComfyUI's simple)."""
from __future__ import annotations

import torch
from pydantic import Field

from ..api import Node, node
from ..core.model import Model
from ..core.sigmas import Sigmas
from .common import append_zero, discrete_table


@node("schedule.simple", version=1)
class Simple(Node):
    """Takes every (N / steps)-th level of the model's table from the top, as ComfyUI's simple scheduler (stride truncated to an integer index)."""

    steps: int = Field(10, ge=1, description="solver steps (levels before the final 0)")

    def run(self, model: Model) -> Sigmas:
        """table[N - 1 - int(i * N / steps)] for i = 0 .. steps - 1, then 0."""
        table = discrete_table(model, "schedule.simple")  # (N,) ascending
        n = table.numel()
        stride = n / self.steps
        idx = torch.tensor([n - 1 - int(i * stride) for i in range(self.steps)])  # (S,)
        return Sigmas(append_zero(table[idx]))  # (S + 1,)
