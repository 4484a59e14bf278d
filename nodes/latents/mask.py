"""latent.mask: an image-resolution inpainting mask (B, 1, H, W) in [0, 1] brought to the VAE's latent resolution
(B, 1, H/f, W/f), as diffusers' StableDiffusionInpaintPipeline prepares it: binarized at the threshold
(mask_processor, do_binarize: >= 0.5 -> 1, else 0), then nearest-neighbour downscaled to the latent size
(prepare_mask_latents: torch's interpolate, mode 'nearest'). 1 = repaint, 0 = keep; sampler.inpaint uses it."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..pipelines.types import Vae


@node("latent.mask")
class LatentMask(Node):
    """A binary latent-resolution inpainting mask (the mask preparation of diffusers' SD inpainting pipeline)."""

    threshold: float = Field(0.5, gt=0, le=1, description="values >= threshold are repainted (1), the rest kept (0)")

    def run(self, vae: Vae, mask: torch.Tensor) -> torch.Tensor:
        return latent_mask(binary_mask(mask, self.threshold), vae.factor)  # (B, 1, H/f, W/f)


def binary_mask(mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """The pixel mask (B, 1, H, W) binarized: 1 where mask >= threshold (repaint), else 0 (diffusers' do_binarize)."""
    if mask.ndim != 4 or mask.shape[1] != 1 or not mask.is_floating_point():
        raise NodeError(f"input 'mask' must be a grayscale mask (B, 1, H, W) in [0, 1] (io.load_mask), got "
                        f"{tuple(mask.shape)} {mask.dtype}")
    return (mask >= threshold).to(mask.dtype)  # (B, 1, H, W) in {0, 1}


def latent_mask(binary: torch.Tensor, factor: int) -> torch.Tensor:
    """A binary pixel mask (B, 1, H, W) nearest-downscaled to the latent size (B, 1, H/f, W/f) (prepare_mask_latents)."""
    height, width = binary.shape[2:]
    if height % factor or width % factor:
        raise NodeError(f"input 'mask' is {width}x{height}, which the VAE's factor {factor} does not divide; use a "
                        f"mask of the image's size (multiples of {factor})")
    return torch.nn.functional.interpolate(binary, size=(height // factor, width // factor))  # nearest
