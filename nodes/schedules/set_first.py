"""sigmas.set_first: replace the first noise level (ComfyUI's SetFirstSigma)."""
from __future__ import annotations

from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.sigmas import Sigmas


@node("sigmas.set_first", version=1)
class SetFirst(Node):
    """Sets sigmas[0] = sigma, e.g. to start above a model's sigma_max or to add noise before a partial schedule."""

    sigma: float = Field(gt=0, description="the new first level; at least the second level")

    def run(self, sigmas: Sigmas) -> Sigmas:
        """A copy with the first level replaced."""
        second = sigmas.values[1].item()
        if self.sigma < second:
            raise NodeError(f"param 'sigma' is {self.sigma}, below the second level {second:g}; the schedule "
                            f"must not increase: use a value >= {second:g}")
        v = sigmas.values.clone()  # (S + 1,)
        v[0] = self.sigma
        return Sigmas(v)
