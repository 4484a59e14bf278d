"""Stable Diffusion 1.x/2.x components behind the pipeline port types (nodes/pipelines/types.py): a CLIP
tokenizer + CLIPTextModel, a UNet2DConditionModel under the scheduler's noise process, an AutoencoderKL.

The arithmetic follows diffusers' StableDiffusionPipeline (encode_prompt, the UNet call, vae decode and
postprocess) so that the same prompt, latents and sigmas give its result; diffusers and transformers
are never imported here (the modules arrive loaded, nodes/pipelines/folder.py)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...graph.errors import NodeError
from ..core.model import Model, ModelSampling
from ..models.parametrisation import NetworkDenoiser, Prediction, TimestepMode
from .tiling import Tiling, sliced, tiled
from .types import Conditioning, EncodeOptions, TextEncoder, TextModel, Vae, repeat_rows

FAMILY = "sd"


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


class ClipTextEncoder(TextEncoder):
    """CLIP tokenizer + CLIPTextModel: prompts -> token embeddings (B, 77, D), as diffusers' encode_prompt."""

    family = FAMILY

    def __init__(self, tokenizer: Any, encoder: torch.nn.Module):
        self.tokenizer, self.encoder = tokenizer, encoder
        self.context = int(tokenizer.model_max_length)
        self.use_mask = bool(getattr(encoder.config, "use_attention_mask", False))

    def encode(self, prompts: list[str], options: EncodeOptions) -> tuple[Conditioning, list[str]]:
        """Embeddings of the last layer (clip_skip 0) or of layer -(clip_skip + 1) after the final layer norm."""
        clip_skip = options.clip_skip
        layers = int(self.encoder.config.num_hidden_layers)
        if clip_skip >= layers:
            raise NodeError(f"param 'clip_skip' is {clip_skip}, but the text encoder has {layers} layers; use "
                            f"0..{layers - 1}")
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.context, truncation=True,
                                return_tensors="pt")
        device = next(self.encoder.parameters()).device
        ids = tokens.input_ids.to(device)  # (B, L)
        mask = tokens.attention_mask.to(device) if self.use_mask else None
        with torch.no_grad():
            if clip_skip == 0:
                emb = self.encoder(ids, attention_mask=mask)[0]  # (B, L, D)
            else:
                hidden = self.encoder(ids, attention_mask=mask, output_hidden_states=True).hidden_states
                norm = getattr(self.encoder, "text_model", self.encoder).final_layer_norm  # transformers < 5 nests it
                emb = norm(hidden[-(clip_skip + 1)])  # (B, L, D)
        return Conditioning(emb.float(), FAMILY), [self.lost_text(p) for p in prompts]

    def lost_text(self, prompt: str) -> str:
        """The text beyond the context (after BOS and before EOS), decoded as diffusers reports it."""
        ids = self.tokenizer(prompt, verbose=False).input_ids  # BOS ... EOS, untruncated
        if len(ids) <= self.context:
            return ""
        return self.tokenizer.decode(ids[self.context - 1:-1])


class UNetNet(torch.nn.Module):
    """`unet(x, t, encoder_hidden_states)` as net(x_in (B, C, h, w), t_in (B,), context (1 or B, L, D)); an
    inpainting UNet (in_channels 2C + 1) also takes `image` (1 or B, C + 1, h, w) = [mask, masked-image latents],
    concatenated after x_in as StableDiffusionInpaintPipeline does (after scale_model_input: x only is scaled)."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet = unet
        self.image_channels = int(unet.config.in_channels) - int(unet.config.out_channels)  # 0, or C + 1

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                image: torch.Tensor | None = None) -> torch.Tensor:
        dtype = module_dtype(self.unet)
        context = repeat_rows(context, x.shape[0])  # (B, L, D)
        context = context.to(device=x.device, dtype=dtype)  # a disk-cached Conditioning comes back on the CPU
        x_in = x.to(dtype)  # (B, C, h, w)
        if (image is None) != (self.image_channels == 0):
            raise NodeError("this is an inpainting UNet (latents, mask and masked-image latents in): bind the image "
                            "and mask with model.inpaint_condition" if image is None else
                            "model.inpaint_condition is for an inpainting UNet; with this UNet use sampler.inpaint")
        if image is not None:
            if image.shape[0] not in (1, x.shape[0]):
                raise NodeError(f"model.inpaint_condition's image has {image.shape[0]} rows but the latent batch is "
                                f"{x.shape[0]}; give one image and mask, or one per latent")
            image = image.expand(x.shape[0], *image.shape[1:]).to(device=x.device, dtype=dtype)  # (B, C + 1, h, w)
            x_in = torch.cat([x_in, image], dim=1)  # (B, 2C + 1, h, w)
        out = self.unet(x_in, t, encoder_hidden_states=context, return_dict=False)[0]  # (B, C, h, w)
        return out.to(x.dtype)


class UNetTextModel(TextModel):
    """A UNet2DConditionModel under its scheduler's noise process and prediction type (eps or v)."""

    family = FAMILY

    def __init__(self, unet: torch.nn.Module, sampling: ModelSampling, prediction: Prediction,
                 timestep: TimestepMode):
        self.net, self._sampling, self.prediction, self.timestep = UNetNet(unet), sampling, prediction, timestep
        self.context_dim = int(unet.config.cross_attention_dim)

    @property
    def sampling(self) -> ModelSampling:
        return self._sampling

    def bind(self, cond: Conditioning) -> Model:
        if cond.family != self.family:
            raise NodeError(f"input 'cond' comes from a {cond.family!r} text encoder, but the model is a {self.family!r} "
                            f"model: encode with this pipeline's text_encoder")
        if cond.embeddings.shape[-1] != self.context_dim:
            raise NodeError(f"the conditioning's embeddings have width {cond.embeddings.shape[-1]}, but the UNet's "
                            f"cross_attention_dim is {self.context_dim}: encode with this pipeline's text encoder")
        return NetworkDenoiser(self.net, self._sampling, self.prediction, self.timestep,
                               cond={"context": cond.embeddings})


class KLVae(Vae):
    """An AutoencoderKL: latents = (mean of q(z | image) - shift) * scaling_factor, as diffusers pipelines scale them."""

    def __init__(self, vae: torch.nn.Module):
        self.vae = vae
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.channels = int(vae.config.latent_channels)
        self.scale = float(vae.config.scaling_factor)
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        size = vae.config.sample_size
        self.tile = int(size[0] if isinstance(size, (list, tuple)) else size)  # diffusers' tile_sample_min_size

    def encode(self, images: torch.Tensor, tiling: Tiling | None = None) -> torch.Tensor:
        x = (images * 2 - 1).to(module_dtype(self.vae))  # (B, 3, H, W) in [-1, 1]
        with torch.no_grad():
            z = self.cut(lambda t: self.vae.encode(t).latent_dist.mode(), x, tiling, 1 / self.factor)
        # z: (B, C, H/f, W/f)
        return ((z - self.shift) * self.scale).to(images.dtype)

    def decode(self, latents: torch.Tensor, tiling: Tiling | None = None) -> torch.Tensor:
        z = (latents / self.scale + self.shift).to(module_dtype(self.vae))  # (B, C, h, w)
        with torch.no_grad():
            image = self.cut(lambda t: self.vae.decode(t, return_dict=False)[0], z, tiling, self.factor)
        return (image.to(latents.dtype) / 2 + 0.5).clamp(0, 1)  # (B, 3, h*f, w*f), raw in about [-1, 1]

    def cut(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tiling: Tiling | None,
            scale: float) -> torch.Tensor:
        """fn(x), or fn over tiles (pixel tiles of `tiling.tile`, default the VAE's sample_size) and/or batch rows."""
        if tiling is None:
            return fn(x)
        pixels = tiling.tile or self.tile
        tile, tile_out = (pixels, pixels // self.factor) if scale < 1 else (pixels // self.factor, pixels)
        each = (lambda t: tiled(fn, t, tile, tile_out, tiling.overlap)) if tiling.tiles else fn
        return sliced(each, x, tiling.slicing)
