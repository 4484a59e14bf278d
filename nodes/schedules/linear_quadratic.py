"""schedule.linear_quadratic: Mochi's schedule, linear then quadratic in noise level (Genmo 2024; ComfyUI)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from ..api import Node, node
from ..core.sigmas import Sigmas
from ..models.sampling import flow_time_to_sigma, sigma_to_flow_time
from .common import F64


@node("schedule.linear_quadratic", version=1)
class LinearQuadratic(Node):
    """Implements the linear-quadratic schedule of Mochi 1 (Genmo 2024): small linear steps below threshold_noise, then quadratic."""

    steps: int = Field(10, ge=1, description="solver steps (levels before the final 0)")
    sigma_max: float = Field(80.0, gt=0, description="the first level (a flow model's t = 1 is sigma = inf, so finite)")
    threshold_noise: float = Field(0.025, gt=0, lt=1, description="fraction of the noise range covered linearly")
    linear_steps: int | None = Field(None, ge=1, description="steps in the linear part; default steps // 2")
    space: Literal["flow", "sigma"] = Field(
        "flow", description="'flow': the fractions scale flow time t (Mochi, flow models); 'sigma': they scale "
                            "sigma itself (ComfyUI on VP/VE models)")

    @field_validator("linear_steps")
    @classmethod
    def _leaves_quadratic(cls, value: int | None, info: ValidationInfo) -> int | None:
        """At least one quadratic step must remain (the quadratic coefficient divides by its count)."""
        steps = info.data.get("steps")
        if value is not None and steps is not None and steps > 1 and not value < steps:
            raise ValueError(f"must be less than steps ({steps}) so a quadratic part remains")
        return value

    def run(self) -> Sigmas:
        """Fractions 1 - f_i of sigma_max (or of flow time t_max), f linear then quadratic, then 0."""
        levels = torch.as_tensor(noise_fractions(self.steps, self.threshold_noise, self.linear_steps), dtype=F64)
        if self.space == "sigma":
            return Sigmas(levels * self.sigma_max)  # (S + 1,)
        t_max = sigma_to_flow_time(torch.tensor(self.sigma_max, dtype=F64))
        return Sigmas(flow_time_to_sigma(levels * t_max))  # (S + 1,)


def noise_fractions(steps: int, threshold: float, linear_steps: int | None) -> list[float]:
    """(steps + 1) fractions from 1 down to 0: Mochi's linear part up to `threshold`, then a quadratic
    through (linear_steps, threshold) with matching slope, reaching 1 at `steps`."""
    if steps == 1:
        return [1.0, 0.0]
    lin = steps // 2 if linear_steps is None else linear_steps
    quad = steps - lin
    gap = lin - threshold * steps  # how far the linear slope falls short of reaching 1 at `steps`
    a = gap / (lin * quad**2)
    b = threshold / lin - 2 * gap / quad**2
    c = a * lin**2
    rising = [i * threshold / lin for i in range(lin)] + [a * i**2 + b * i + c for i in range(lin, steps)] + [1.0]
    return [1.0 - f for f in rising]
