"""sigmas.denoise_strength: keep the last fraction of a schedule's steps (img2img denoise)."""
from __future__ import annotations

from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.sigmas import Sigmas


@node("sigmas.denoise_strength", version=1)
class DenoiseStrength(Node):
    """Keeps the last round(strength * steps) steps, as ComfyUI's denoise (SDEdit, Meng et al. 2022): start from partly noised data."""

    strength: float = Field(1.0, gt=0, le=1, description="1 keeps the whole schedule; 0.5 the lower half")

    def run(self, sigmas: Sigmas) -> Sigmas:
        """sigmas[-(k + 1):] with k = round(strength * steps) (Python's round, as ComfyUI's SplitSigmasDenoise)."""
        keep = round(self.strength * sigmas.steps)
        if keep < 1:
            raise NodeError(f"param 'strength' is {self.strength}, which keeps {keep} of the input's "
                            f"{sigmas.steps} steps; use a strength above {0.5 / sigmas.steps:.3g} "
                            f"or a longer schedule")
        return Sigmas(sigmas.values[-(keep + 1):].clone())  # (k + 1,)
