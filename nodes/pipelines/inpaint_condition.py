"""model.inpaint_condition: bind an image and its mask to an inpainting UNet (SD 1.x/2.x inpainting checkpoints,
in_channels 2C + 1), giving a TextModel whose every bound Denoiser (prompt and negative prompt alike) feeds the UNet
[x_in, mask, masked-image latents], as StableDiffusionInpaintPipeline does for num_channels_unet == 9:
- mask: the pixel mask binarized (>= threshold: repaint) and nearest-downscaled to the latent size (latent.mask);
- masked image: the image with the repainted pixels set to 0 in [-1, 1] (0.5 in [0, 1]), encoded by the VAE (its
  posterior mean, as vae.encode; diffusers samples the posterior).
No per-step blend is needed (the UNet sees the known image); for an ordinary 4-channel UNet use sampler.inpaint."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.model import Model, ModelSampling
from ..latents.mask import binary_mask, latent_mask
from .types import Conditioning, TextModel, Vae


@node("model.inpaint_condition")
class ModelInpaintCondition(Node):
    """The image conditioning of an inpainting UNet: mask and masked-image latents (Rombach et al. 2022, SD inpainting)."""

    threshold: float = Field(0.5, gt=0, le=1, description="mask values >= threshold are repainted, the rest kept")

    def run(self, model: TextModel, vae: Vae, images: torch.Tensor, mask: torch.Tensor) -> TextModel:
        extra = getattr(getattr(model, "net", None), "image_channels", 0)
        if extra != vae.channels + 1:
            raise NodeError(f"input 'model' is not an inpainting UNet (it takes no {vae.channels + 1} image channels): "
                            f"for an ordinary model use sampler.inpaint")
        return ImageConditioned(model, inpaint_image(vae, images, mask, self.threshold))


def inpaint_image(vae: Vae, images: torch.Tensor, mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """[latent mask, masked-image latents] (B, 1 + C, h, w) of images (B, 3, H, W) in [0, 1] and a pixel mask."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2:] != mask.shape[2:]:
        raise NodeError(f"input 'images' must be RGB images (B, 3, H, W) of the mask's size, got "
                        f"{tuple(images.shape)} for a mask {tuple(mask.shape)}")
    binary = binary_mask(mask, threshold)  # (B, 1, H, W)
    masked = torch.where(binary.bool(), 0.5, images)  # (B, 3, H, W): repainted pixels at 0 in [-1, 1]
    return torch.cat([latent_mask(binary, vae.factor), vae.encode(masked)], dim=1)  # (B, 1 + C, h, w)


class ImageConditioned(TextModel):
    """A TextModel whose bound Denoisers also carry the inpainting image (the UNet's `image` input)."""

    def __init__(self, inner: TextModel, image: torch.Tensor):
        self.inner, self.image, self.family = inner, image, inner.family

    @property
    def sampling(self) -> ModelSampling:
        return self.inner.sampling

    def bind(self, cond: Conditioning) -> Model:
        return self.inner.bind(cond).bind(image=self.image)
