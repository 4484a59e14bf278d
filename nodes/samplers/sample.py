"""sample: run a sampler over a schedule from an initial latent (ComfyUI's KSampler, as a graph node)."""
from __future__ import annotations

from typing import ClassVar

import torch

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.sampler import Sampler, run_steps
from ..core.sigmas import Sigmas


@node("sample", version=1)
class Sample(Node):
    """Solve from latent at sigmas[0] down the schedule with the sampler (Karras et al. 2022, Alg. 1/2)."""

    uses_seed: ClassVar[bool] = True

    def run(self, denoise: Denoiser, sigmas: Sigmas, sampler: Sampler, latent: torch.Tensor,
            ctx: NodeContext) -> torch.Tensor:
        """The sampler's final x (B, ...), stepped by the one generic loop."""
        check_latent(latent)
        state = sampler.init(latent, sigmas)
        return run_steps(sampler, denoise, state, ctx.noise, ctx).x  # (B, ...)


def check_latent(latent: torch.Tensor) -> None:
    """Reject latents a sampler cannot step: no batch dimension, or not floating point."""
    if latent.ndim < 2:
        raise NodeError(f"input 'latent' must have a batch dimension first, (B, ...), got shape "
                        f"{tuple(latent.shape)}; set latent.noise 'shape' to one sample's shape, e.g. [2]")
    if not latent.is_floating_point():
        raise NodeError(f"input 'latent' must be a floating-point tensor, got {latent.dtype}; "
                        f"use dtype float32 or float64")
