"""vae.encode: images (B, 3, H, W) in [0, 1] -> scaled latents (the posterior mean, deterministic;
diffusers' img2img samples the posterior instead, whose std is small); with `tiling` / `slicing`
(vae_call.py) the VAE runs on overlapping tiles / one batch row at a time."""
from __future__ import annotations

import torch

from ...graph.errors import NodeError
from ..api import node
from .types import Vae
from .vae_call import VaeCall


@node("vae.encode")
class VaeEncode(VaeCall):
    """Encode images with the pipeline's VAE (Kingma & Welling 2014), scaled by its scaling_factor (Rombach et al. 2022)."""

    def run(self, vae: Vae, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise NodeError(f"input 'images' must be RGB images (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        height, width = images.shape[2:]
        if height % vae.multiple or width % vae.multiple:
            raise NodeError(f"input 'images' is {width}x{height}, which {vae.multiple} (the VAE's factor "
                            f"{vae.factor}{' x 2x2 latent patches' if vae.multiple != vae.factor else ''}) does not "
                            f"divide; resize or crop to multiples of {vae.multiple}")
        return vae.encode(images, self.cut(vae))  # (B, C, H/f, W/f)
