"""sigmas.split_at_sigma: cut a schedule where it first reaches a noise level."""
from __future__ import annotations

from pydantic import Field

from ..api import Node, node
from ..core.sigmas import Sigmas
from .split_at_step import SigmasSplit, split


@node("sigmas.split_at_sigma", version=1)
class SplitAtSigma(Node):
    """Splits a schedule at its first level <= sigma: high ends there, low starts there (two-stage sampling)."""

    sigma: float = Field(ge=0, description="the cut is the first level at or below this sigma")

    def run(self, sigmas: Sigmas) -> SigmasSplit:
        """The cut level is shared by both parts, so sigmas.concat joins them back."""
        below = (sigmas.values <= self.sigma).nonzero()  # (K, 1); never empty when the schedule ends in 0
        cut = int(below[0, 0]) if below.numel() else sigmas.steps + 1
        levels = ", ".join(f"{v:.4g}" for v in sigmas.values.tolist())
        return split(sigmas, cut, f"param 'sigma' is {self.sigma}, so the first level at or below it is "
                                  f"level {cut} of [{levels}]")
