"""vae.decode: latents -> images (B, 3, H, W) in [0, 1], as diffusers pipelines decode and denormalise; with
`tiling` / `slicing` (vae_call.py) the VAE runs on overlapping tiles / one batch row at a time."""
from __future__ import annotations

import torch

from ...graph.errors import NodeError
from ..api import node
from .types import Vae
from .vae_call import VaeCall


@node("vae.decode")
class VaeDecode(VaeCall):
    """Decode latents with the pipeline's VAE (Kingma & Welling 2014; the autoencoder of Rombach et al. 2022)."""

    def run(self, vae: Vae, latent: torch.Tensor) -> torch.Tensor:
        if latent.ndim != 4 or latent.shape[1] != vae.channels:
            raise NodeError(f"input 'latent' must be (B, {vae.channels}, h, w) for this VAE, got "
                            f"{tuple(latent.shape)}")
        return vae.decode(latent, self.cut(vae))  # (B, 3, h*f, w*f)
