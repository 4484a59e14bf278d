"""io.load_mask: an inpainting mask from an image file, (1, 1, H, W) float32 in [0, 1], 1 = repaint, 0 = keep.

'luminance' reads the image as Pillow's grayscale ('L', ITU-R 601 luma), as diffusers' inpainting
mask_processor does (white = repaint); 'alpha' reads 1 - alpha, ComfyUI's LoadImageMask convention for its
alpha channel (the transparent part is repainted). latent.mask brings it to the latent resolution."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..api import node
from .load_image import LoadImage, read_pixels


@node("io.load_mask")
class LoadMask(LoadImage):
    """Read an inpainting mask image (Pillow) as values in [0, 1], white = repaint (diffusers' convention)."""

    channel: Literal["luminance", "alpha"] = Field("luminance", description="'luminance': the grayscale image "
                                                   "(white = repaint); 'alpha': 1 - alpha (transparent = repaint)")
    invert: bool = Field(False, description="swap repaint and keep (mask -> 1 - mask)")

    def run(self) -> torch.Tensor:
        if self.channel == "luminance":
            values = read_pixels(self.path, "L") / 255.0  # (H, W)
        else:
            values = 1.0 - read_pixels(self.path, "RGBA")[..., 3] / 255.0  # (H, W)
        mask = torch.from_numpy(values)[None, None].contiguous()  # (1, 1, H, W)
        return 1.0 - mask if self.invert else mask
