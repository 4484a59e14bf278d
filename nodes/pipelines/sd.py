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
from .tiling import Tiling, sliced, tiled
from .types import Conditioning, EncodeOptions, NetworkTextModel, TextEncoder, Vae, repeat_rows

FAMILY = "sd"


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def check_clip_skip(clip_skip: int, encoder: torch.nn.Module) -> None:
    """clip_skip k keeps the encoder's first L - k layers, so k < L (param named for text.encode)."""
    layers = int(encoder.config.num_hidden_layers)
    if clip_skip >= layers:
        raise NodeError(f"param 'clip_skip' is {clip_skip}, but the text encoder has {layers} layers; use "
                        f"0..{layers - 1}")


def tokenize(tokenizer: Any, prompts: list[str], context: int) -> Any:
    """input_ids and attention_mask (B, context), padded to and cut at the context as diffusers' encode_prompt does."""
    return tokenizer(prompts, padding="max_length", max_length=context, truncation=True, return_tensors="pt")


def lost_text(tokenizer: Any, context: int, prompt: str) -> str:
    """The text a `context`-token encoding loses (before the final EOS), decoded as diffusers reports it; '' if none:
    the same slice for CLIP (BOS ... EOS) and T5 (... EOS), since both keep context - 1 tokens before their EOS."""
    ids = tokenizer(prompt, verbose=False).input_ids  # untruncated, EOS last
    if len(ids) <= context:
        return ""
    return tokenizer.decode(ids[context - 1:-1])


def module_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


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
        check_clip_skip(clip_skip, self.encoder)
        device = module_device(self.encoder)
        tokens = tokenize(self.tokenizer, prompts, self.context)
        ids = tokens.input_ids.to(device)  # (B, L)
        mask = tokens.attention_mask.to(device) if self.use_mask else None
        with torch.no_grad():
            if clip_skip == 0:
                emb = self.encoder(ids, attention_mask=mask)[0]  # (B, L, D)
            else:
                hidden = self.encoder(ids, attention_mask=mask, output_hidden_states=True).hidden_states
                norm = getattr(self.encoder, "text_model", self.encoder).final_layer_norm  # transformers < 5 nests it
                emb = norm(hidden[-(clip_skip + 1)])  # (B, L, D)
        return Conditioning(emb.float(), FAMILY), [lost_text(self.tokenizer, self.context, p) for p in prompts]


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
        return self.call(x, t, context, image=image)

    def call(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
             added: dict[str, torch.Tensor] | None = None, image: torch.Tensor | None = None) -> torch.Tensor:
        """The UNet in its dtype on x's device; `added`: its added_cond_kwargs (1 or B rows; SDXL's); `image`: an
        inpainting UNet's [mask, masked-image latents] (1 or B rows; model.inpaint_condition's)."""
        batch, dtype = x.shape[0], module_dtype(self.unet)

        def ready(t: torch.Tensor) -> torch.Tensor:  # a disk-cached Conditioning comes back on the CPU
            return repeat_rows(t, batch).to(device=x.device, dtype=dtype)

        extra = None if added is None else {k: ready(v) for k, v in added.items()}
        x_in = x.to(dtype)  # (B, C, h, w)
        if (image is None) != (self.image_channels == 0):
            raise NodeError("this is an inpainting UNet (latents, mask and masked-image latents in): bind the image "
                            "and mask with model.inpaint_condition" if image is None else
                            "model.inpaint_condition is for an inpainting UNet; with this UNet use sampler.inpaint")
        if image is not None:
            if image.shape[0] not in (1, batch):
                raise NodeError(f"model.inpaint_condition's image has {image.shape[0]} rows but the latent batch is "
                                f"{batch}; give one image and mask, or one per latent")
            x_in = torch.cat([x_in, ready(image)], dim=1)  # (B, 2C + 1, h, w)
        out = self.unet(x_in, t, encoder_hidden_states=ready(context), added_cond_kwargs=extra,
                        return_dict=False)[0]  # (B, C, h, w)
        return out.to(x.dtype)


class UNetTextModel(NetworkTextModel):
    """A UNet2DConditionModel under its scheduler's noise process and prediction type (eps or v)."""

    family = FAMILY
    net: UNetNet

    @property
    def context_dim(self) -> int:
        return int(self.net.unet.config.cross_attention_dim)

    def conditioning(self, cond: Conditioning) -> dict[str, torch.Tensor]:
        if cond.embeddings.shape[-1] != self.context_dim:
            raise NodeError(f"the conditioning's embeddings have width {cond.embeddings.shape[-1]}, but the UNet's "
                            f"cross_attention_dim is {self.context_dim}: encode with this pipeline's text encoder")
        return {"context": cond.embeddings}


class KLVae(Vae):
    """An AutoencoderKL: latents = (mean of q(z | image) - shift) * scaling_factor, as diffusers pipelines scale them.

    A VAE whose config has per-channel latents_mean / latents_std (e.g. Playground v2.5's SDXL VAE) uses
    (z - mean) * scaling_factor / std instead, as StableDiffusionXLPipeline does."""

    def __init__(self, vae: torch.nn.Module):
        self.vae = vae
        config = vae.config
        self.factor = 2 ** (len(config.block_out_channels) - 1)
        self.channels = int(config.latent_channels)
        self.scale = float(config.scaling_factor)
        shape = (1, self.channels, 1, 1)
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        shift = float(getattr(config, "shift_factor", None) or 0.0)
        self.shift = torch.tensor(mean).view(shape) if mean is not None and std is not None else torch.tensor(shift)
        self.std = torch.tensor(std).view(shape) if mean is not None and std is not None else torch.tensor(1.0)
        size = config.sample_size
        self.tile = int(size[0] if isinstance(size, (list, tuple)) else size)  # diffusers' tile_sample_min_size

    def encode(self, images: torch.Tensor, tiling: Tiling | None = None) -> torch.Tensor:
        x = (images * 2 - 1).to(module_dtype(self.vae))  # (B, 3, H, W) in [-1, 1]
        with torch.no_grad():
            z = self.cut(lambda t: self.vae.encode(t).latent_dist.mode(), x, tiling, 1 / self.factor)
        shift, std = self.shift.to(z), self.std.to(z)  # z: (B, C, H/f, W/f)
        return ((z - shift) * self.scale / std).to(images.dtype)

    def decode(self, latents: torch.Tensor, tiling: Tiling | None = None) -> torch.Tensor:
        shift, std = self.shift.to(latents), self.std.to(latents)
        z = (latents * std / self.scale + shift).to(module_dtype(self.vae))  # (B, C, h, w)
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
