"""schedule.uniform_timesteps: diffusers' evenly spaced training timesteps (linspace, leading, trailing).

Two families of diffusers schedulers space them differently: DDIM, DDPM, Euler and Heun take
`steps` points; the multistep ones (UniPC, DPMSolverMultistep, DEIS) take `steps + 1` points,
drop the last and round to integers (`multistep=True`). At 10 'linspace' steps over 1000
timesteps the two grids differ by up to 92% in sigma, so this choice matters for parity."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.model import Model
from ..core.sigmas import Sigmas
from .common import F64, append_zero, discrete_table

Spacing = Literal["linspace", "leading", "trailing"]


@node("schedule.uniform_timesteps", version=1)
class UniformTimesteps(Node):
    """Implements the timestep spacings of Lin et al. (2024, Table 2) as diffusers' set_timesteps does, over a discrete model's table."""

    steps: int = Field(10, ge=1, description="solver steps; at most the model's training timesteps")
    spacing: Spacing = Field("linspace", description="'trailing' starts at the last training timestep (Lin et al. 2024)")
    steps_offset: int = Field(0, ge=0, description="'leading' only: added to every timestep (SD 1.x configs: 1)")
    integer_timesteps: bool = Field(False, description="round 'linspace' timesteps to integers, as DDIM, DDPM and "
                                                       "DPM-Solver do; Euler and Heun keep them fractional")
    multistep: bool = Field(False, description="space as diffusers' multistep schedulers (UniPC, DPMSolverMultistep, "
                                               "DEIS) do: steps + 1 points, the last dropped, integer timesteps")

    @field_validator("steps_offset")
    @classmethod
    def _leading_only(cls, value: int, info: ValidationInfo) -> int:
        """diffusers adds steps_offset to 'leading' timesteps only; elsewhere it would silently do nothing."""
        spacing = info.data.get("spacing")
        if value and spacing is not None and spacing != "leading":
            raise ValueError(f"only applies to spacing 'leading', not '{spacing}'; remove it")
        return value

    def run(self, model: Model) -> Sigmas:
        """sigma of each timestep (linear in the table between integers, as diffusers' np.interp), then 0."""
        table = discrete_table(model, "schedule.uniform_timesteps")  # (N,) ascending
        n = table.numel()
        if self.steps > n:
            raise NodeError(f"param 'steps' is {self.steps}, more than the model's {n} training timesteps; "
                            f"use at most {n}")
        t = spaced_timesteps(self.steps, n, self.spacing, self.steps_offset, self.integer_timesteps,
                             self.multistep)  # (S,)
        if t.max() > n - 1:
            raise NodeError(f"param 'steps_offset' is {self.steps_offset}, which puts the first timestep at "
                            f"{int(t.max())}, past the model's last ({n - 1}); lower it or use fewer steps")
        low = t.floor().long()  # (S,)
        high = (low + 1).clamp(max=n - 1)  # (S,)
        sigmas = table[low] + (t - low) * (table[high] - table[low])  # (S,)
        return Sigmas(append_zero(sigmas))  # (S + 1,)


def spaced_timesteps(steps: int, n: int, spacing: Spacing, offset: int = 0, integer: bool = False,
                     multistep: bool = False) -> torch.Tensor:
    """(steps,) decreasing float64 timesteps in [0, n - 1], as diffusers' set_timesteps computes them
    (`multistep`: as its multistep schedulers do, from steps + 1 integer points with the last dropped)."""
    if spacing == "trailing":  # the same in both families
        return (n - torch.arange(steps, dtype=F64) * (n / steps)).round() - 1  # (S,)
    points = steps + 1 if multistep else steps
    if spacing == "linspace":
        t = torch.linspace(0, n - 1, points, dtype=F64)  # (P,)
        t = t.round() if integer or multistep else t
    else:  # leading
        t = torch.arange(points, dtype=F64) * (n // points) + offset  # (P,)
    return t.flip(0)[:steps]  # (S,)
