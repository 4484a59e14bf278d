"""schedule.ddim_uniform: DDIM's uniform timestep skipping over a discrete model's table (ComfyUI's ddim_uniform)."""
from __future__ import annotations

import torch
from pydantic import Field

from ..api import Node, node
from ..core.model import Model
from ..core.sigmas import Sigmas
from .common import append_zero, discrete_table


@node("schedule.ddim_uniform", version=1)
class DDIMUniform(Node):
    """Implements the uniform timestep subsequence of Song et al. (2021a, DDIM): t = 1, 1 + c, 1 + 2c, ... with c = N // steps."""

    steps: int = Field(10, ge=1, description="target steps; as ComfyUI, one or more extra steps when steps does "
                                             "not divide the table length (c = N // steps)")

    def run(self, model: Model) -> Sigmas:
        """table[1::c] reversed, then 0."""
        table = discrete_table(model, "schedule.ddim_uniform")  # (N,) ascending
        stride = max(table.numel() // self.steps, 1)
        levels = table[torch.arange(1, table.numel(), stride)].flip(0)  # (S',)
        return Sigmas(append_zero(levels))  # (S' + 1,)
