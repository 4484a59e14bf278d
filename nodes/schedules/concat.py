"""sigmas.concat: join two schedules, the inverse of a split."""
from __future__ import annotations

import torch

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.sigmas import Sigmas


@node("sigmas.concat", version=1)
class Concat(Node):
    """Joins high then low into one schedule; a level shared at the joint appears once (undoes sigmas.split_*)."""

    def run(self, high: Sigmas, low: Sigmas) -> Sigmas:
        """high's levels, then low's (without its first level when it equals high's last)."""
        end, start = high.values[-1].item(), low.values[0].item()
        if start > end:
            raise NodeError(f"input 'low' starts at sigma {start:g}, above the end of input 'high' ({end:g}); "
                            f"the joined schedule must not increase: connect the noisier schedule to 'high'")
        rest = low.values[1:] if start == end else low.values  # (L,)
        return Sigmas(torch.cat([high.values, rest]))  # (H + L,)
