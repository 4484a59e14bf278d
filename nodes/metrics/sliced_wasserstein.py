"""metrics.sliced_wasserstein: distance between generated samples and exact reference samples."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Distribution
from .common import flat_points, sliced_wasserstein

REFERENCE_SEED_OFFSET = 1  # reference draws use seed + 1, so directions do not depend on their count


@node("metrics.sliced_wasserstein")
class SlicedWasserstein(Node):
    """Sliced 2-Wasserstein distance to exact reference samples (Rabin et al. 2011; Bonneel et al. 2015)."""

    projections: int = Field(256, ge=1, description="random unit directions averaged over")
    reference_samples: int | None = Field(None, ge=1, description="exact draws; None = as many as samples")
    seed: int = Field(0, description="seed of directions and reference draws, independent of the workflow seed")

    def run(self, samples: torch.Tensor, reference: Distribution, ctx: NodeContext) -> float:
        x = flat_points(samples, "samples")  # (N, D)
        m = self.reference_samples or x.shape[0]
        draws = torch.Generator().manual_seed(self.seed + REFERENCE_SEED_OFFSET)
        ref = flat_points(reference.sample(m, draws), "reference")  # (M, D')
        if ref.shape[1] != x.shape[1]:
            raise NodeError(f"input 'reference' draws points of {ref.shape[1]} values each, but input 'samples' "
                            f"has {x.shape[1]} per sample (shape {tuple(samples.shape)}); connect the "
                            f"distribution the samples are meant to follow")
        value = sliced_wasserstein(x, ref, self.projections, torch.Generator().manual_seed(self.seed))
        ctx.record(sliced_wasserstein=value)
        return value
