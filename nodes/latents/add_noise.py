"""latent.add_noise: partly noise a clean latent to the first level of a (shortened) schedule, x = x0 + sigma_0 eps,
the start of img2img (SDEdit, Meng et al. 2022; diffusers' scheduler.add_noise in sigma space).

eps comes from the run's keyed noise at the initial-step key (particles 0..B-1), as latent.noise and
latent.empty draw it; with sigmas.denoise_strength before it this is ComfyUI's / diffusers' img2img."""
from __future__ import annotations

from typing import ClassVar

import torch

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..core.sigmas import Sigmas
from .noise import initial_noise


@node("latent.add_noise")
class LatentAddNoise(Node):
    """x0 + sigma_0 * N(0, I): a clean latent noised to the schedule's first level (SDEdit, Meng et al. 2022)."""

    uses_seed: ClassVar[bool] = True

    def run(self, latent: torch.Tensor, sigmas: Sigmas, ctx: NodeContext) -> torch.Tensor:
        if latent.ndim < 2 or not latent.is_floating_point():
            raise NodeError(f"input 'latent' must be a floating-point batch (B, ...), got {tuple(latent.shape)} "
                            f"{latent.dtype}")
        noise = initial_noise(latent.shape[0], tuple(latent.shape[1:]), latent.dtype, sigmas, ctx)  # (B, ...)
        return latent + noise.to(latent.device)  # (B, ...)
