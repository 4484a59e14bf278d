"""sigmas.split_at_fraction: cut a discrete model's schedule where diffusers' denoising_end / denoising_start cut it.

The SDXL base -> refiner hand-off ("ensemble of expert denoisers", Balaji et al. 2022, eDiff-I; Podell et al. 2023)
runs the base with denoising_end = f and the refiner's img2img pipeline with denoising_start = f on the same
steps: diffusers keeps the base's timesteps t >= c and the refiner's t < c, c = int(round(T - f T)) over the
model's T training timesteps. The cut is on timesteps, not on a step count or a sigma, so neither
sigmas.split_at_step nor sigmas.split_at_sigma can state it for every schedule."""
from __future__ import annotations

from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.model import Model
from ..core.sigmas import Sigmas
from .split_at_step import SigmasSplit, split

KIND = "sigmas.split_at_fraction"
TOLERANCE = 1e-6  # timesteps recovered from sigmas carry round-off; diffusers' are the integers (or fractions) exactly


@node(KIND)
class SplitAtFraction(Node):
    """Splits a schedule at diffusers' denoising_end / denoising_start cut (Balaji et al. 2022's expert hand-off)."""

    fraction: float = Field(gt=0, lt=1, description="the base pipeline's denoising_end = the refiner's "
                                                    "denoising_start (e.g. 0.8: the refiner denoises the last "
                                                    "20% of the training timesteps)")

    def run(self, model: Model, sigmas: Sigmas) -> SigmasSplit:
        """high: the levels at timesteps >= c, then the first below (the hand-off level); low: from that level on."""
        table = model.sampling.discrete_sigmas  # (T,) ascending
        if table is None:
            raise NodeError(f"input 'model': {KIND} cuts on a discrete model's training timesteps (diffusers' "
                            f"denoising_end), but this model ({type(model.sampling).__name__}) is continuous-time; "
                            f"cut with sigmas.split_at_sigma or sigmas.split_at_step")
        cutoff = int(round(table.numel() - self.fraction * table.numel()))
        t = model.sampling.timestep(sigmas.values[:-1])  # (S,) the steps' network timesteps, decreasing
        cut = int((t >= cutoff - TOLERANCE).sum())
        return split(sigmas, cut, f"param 'fraction' is {self.fraction}: {cut} of the steps are at timesteps >= "
                                  f"{cutoff} (round({table.numel()} - fraction x {table.numel()}))")
