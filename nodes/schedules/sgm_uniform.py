"""schedule.sgm_uniform: Stability's sgm 'uniform' discretisation (ComfyUI's sgm_uniform)."""
from __future__ import annotations

from pydantic import Field

from ..api import Node, node
from ..core.model import Model
from ..core.sigmas import Sigmas
from .normal import uniform_in_time


@node("schedule.sgm_uniform", version=1)
class SGMUniform(Node):
    """Noise levels at steps + 1 evenly spaced model times from sigma_max to sigma_min, the last replaced by 0 (Stability's generative-models; LCM, Turbo)."""

    steps: int = Field(10, ge=1, description="solver steps (levels before the final 0)")

    def run(self, model: Model) -> Sigmas:
        """sigma(linspace(t(sigma_max), t(sigma_min), steps + 1)[:-1]), then 0."""
        return Sigmas(uniform_in_time(model.sampling, self.steps, sgm=True))
