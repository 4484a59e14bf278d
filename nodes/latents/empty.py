"""latent.empty: the initial latent of a text-to-image run, sigma_max * N(0, I) of the VAE's latent shape.

ComfyUI's EmptyLatentImage gives zeros and its KSampler adds the noise; samplegraph's `sample` starts at
the latent it is given, so this node draws that noise itself, from the same keyed source as latent.noise
(particle ids 0..batch-1): the same seed gives the same image whatever the batch split."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..core.sigmas import Sigmas
from ..pipelines.types import Vae
from .noise import initial_noise


@node("latent.empty")
class LatentEmpty(Node):
    """Initial noise sigma_max * N(0, I) (Karras et al. 2022, Alg. 1, line 2) for width x height images."""

    uses_seed: ClassVar[bool] = True
    width: int = Field(512, ge=1, description="image width in pixels (a multiple of the VAE's factor, 8 for SD)")
    height: int = Field(512, ge=1, description="image height in pixels (a multiple of the VAE's factor)")
    batch: int = Field(1, ge=1, description="images (particles 0..batch-1)")
    dtype: Literal["float32", "float64"] = "float32"

    def run(self, vae: Vae, sigmas: Sigmas, ctx: NodeContext) -> torch.Tensor:
        f, m = vae.factor, vae.multiple
        if self.width % m or self.height % m:
            what = f"the VAE's downscale factor {f}" if m == f else \
                f"{m} (the VAE's downscale factor {f} times the model's 2x2 latent patches)"
            raise NodeError(f"params 'width' x 'height' = {self.width} x {self.height}: both must be multiples of "
                            f"{what} (e.g. {self.width // m * m or m} x {self.height // m * m or m})")
        shape = (vae.channels, self.height // f, self.width // f)
        return initial_noise(self.batch, shape, getattr(torch, self.dtype), sigmas, ctx)  # (B, C, H/f, W/f)
