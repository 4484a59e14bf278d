"""latent.noise: the initial latent x = sigma_max * eps, keyed by particle id (Karras et al. 2022)."""
from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

import torch
from pydantic import Field

from ..api import Node, node
from ..core.context import NodeContext
from ..core.memory import MemoryEstimate
from ..core.noise import INITIAL_STEP
from ..core.sigmas import Sigmas


# Peak bytes per element of NoiseSource.normal: the output (its hashes live in the output's bytes)
# plus, for an odd numel, the trimmed copy; CPU blocks add a fixed < 1 MiB, CUDA's one block 8 bytes
# per element. Measured as the peak-RSS growth of 4M-element CPU draws: 4-8 bytes (float32/float64),
# 21 bytes (float64, 3 per row); 32 leaves room for CUDA's scratch.
NOISE_WORK_BYTES = 32


@node("latent.noise", version=1)
class LatentNoise(Node):
    """Initial noise sigma_max * N(0, I) of Karras et al. (2022), Algorithm 1, line 2."""

    uses_seed: ClassVar[bool] = True
    batch: int = Field(1, ge=1, description="number of particles (ids 0..batch-1)")
    shape: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, description="one sample's shape, e.g. [2]")
    dtype: Literal["float32", "float64"] = "float32"

    def memory_estimate(self) -> MemoryEstimate:
        """The draw's peak: the hash temporaries and the output, per element."""
        numel = self.batch * math.prod(self.shape)
        return MemoryEstimate(numel * NOISE_WORK_BYTES, f"{self.batch} x {self.shape} {self.dtype} noise",
                              ("batch", "shape"))

    def run(self, sigmas: Sigmas, ctx: NodeContext) -> torch.Tensor:
        """Noise for particles 0..batch-1 at the INITIAL_STEP key, scaled to sigmas[0]."""
        return initial_noise(self.batch, tuple(self.shape), getattr(torch, self.dtype), sigmas, ctx)  # (B, *shape)


def initial_noise(batch: int, shape: tuple[int, ...], dtype: torch.dtype, sigmas: Sigmas,
                  ctx: NodeContext) -> torch.Tensor:
    """sigmas[0] * eps (batch, *shape) for particles 0..batch-1 at the INITIAL_STEP key of the run's noise."""
    particle = torch.arange(batch, device=ctx.device)  # (B,)
    eps = ctx.noise.normal(particle, INITIAL_STEP, shape, dtype=dtype, device=ctx.device)  # (B, *shape)
    return eps * sigmas.sigma_max  # (B, *shape)
