"""latent.noise: the initial latent x = sigma_max * eps, keyed by particle id (Karras et al. 2022)."""
from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field

from ..api import Node, node
from ..core.context import NodeContext
from ..core.noise import INITIAL_STEP
from ..core.sigmas import Sigmas


@node("latent.noise", version=1)
class LatentNoise(Node):
    """Initial noise sigma_max * N(0, I) of Karras et al. (2022), Algorithm 1, line 2."""

    uses_seed: ClassVar[bool] = True
    batch: int = Field(1, ge=1, description="number of particles (ids 0..batch-1)")
    shape: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, description="one sample's shape, e.g. [2]")
    dtype: Literal["float32", "float64"] = "float32"

    def run(self, sigmas: Sigmas, ctx: NodeContext) -> torch.Tensor:
        """Noise for particles 0..batch-1 at the INITIAL_STEP key, scaled to sigmas[0]."""
        particle = torch.arange(self.batch, device=ctx.device)  # (B,)
        eps = ctx.noise.normal(particle, INITIAL_STEP, tuple(self.shape), dtype=getattr(torch, self.dtype),
                               device=ctx.device)  # (B, *shape)
        return eps * sigmas.sigma_max  # (B, *shape)
