"""sigmas.split_at_step: cut a schedule in two at a step index (ComfyUI's SplitSigmas)."""
from __future__ import annotations

from typing import NamedTuple

from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.sigmas import Sigmas


class SigmasSplit(NamedTuple):
    """The two parts of a split schedule; they share the level at the cut."""

    high: Sigmas  # levels 0 .. cut: the noisy part, not ending in 0
    low: Sigmas  # levels cut .. end: the rest


@node("sigmas.split_at_step", version=1)
class SplitAtStep(Node):
    """Splits a schedule at step `step`: high = sigmas[:step + 1], low = sigmas[step:] (ComfyUI's SplitSigmas)."""

    step: int = Field(ge=1, description="the level shared by both parts; 1 .. steps - 1")

    def run(self, sigmas: Sigmas) -> SigmasSplit:
        """Both parts keep the level at `step`, so sigmas.concat joins them back."""
        return split(sigmas, self.step, f"param 'step' is {self.step}")


def split(sigmas: Sigmas, cut: int, what: str) -> SigmasSplit:
    """Split at level index `cut`, which must leave each part at least one step; `what` names the cause."""
    if not 1 <= cut <= sigmas.steps - 1:
        raise NodeError(f"{what}, but the input has {sigmas.steps} steps, so the cut must be at step 1 .. "
                        f"{sigmas.steps - 1} for both parts to keep a step")
    v = sigmas.values  # (S + 1,)
    # copies, not views: two outputs sharing storage cannot be written to the disk cache (safetensors)
    return SigmasSplit(high=Sigmas(v[:cut + 1].clone()), low=Sigmas(v[cut:].clone()))
