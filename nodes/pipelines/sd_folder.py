"""Loading a Stable Diffusion 1.x/2.x folder (folder.FAMILIES' "sd" entry): CLIP text encoder and tokenizer, a
UNet2DConditionModel under the scheduler's noise process, an AutoencoderKL, each checked against the others."""
from __future__ import annotations

import torch

from ...graph.errors import NodeError
from ..models.diffusers_model import load_module
from ..models.networks.diffusers_net import scheduler_sampling
from .folder import LoadSettings, PipelineFolder, load_text_encoder, load_tokenizer
from .sd import ClipTextEncoder, KLVae, UNetNet, UNetTextModel
from .types import Pipeline


def load_sd(folder: PipelineFolder, settings: LoadSettings) -> Pipeline:
    """The SD pipeline's three ports from its checked folder."""
    dirs, dtype, device = folder.folders, settings.dtype_of, settings.device
    sampling, prediction = scheduler_sampling(folder.scheduler_config(settings.scheduler),
                                              f"scheduler of '{folder.root}'")
    encoder = load_text_encoder(dirs["text_encoder"], dtype("text_encoder"), device)
    tokenizer = load_tokenizer(dirs["tokenizer"], folder.index["tokenizer"][1], encoder)
    unet, vae = load_unet_and_vae(folder, settings, dtype("vae"), inpainting=True)
    model = UNetTextModel(UNetNet(unet), sampling, settings.prediction_or(prediction), settings.timestep)
    if model.context_dim != encoder.config.hidden_size:
        raise NodeError(f"'{dirs['text_encoder']}': hidden_size {encoder.config.hidden_size} differs from the "
                        f"UNet's cross_attention_dim {model.context_dim}: the components do not belong together")
    return Pipeline(model, ClipTextEncoder(tokenizer, encoder), vae)


def load_unet_and_vae(folder: PipelineFolder, settings: LoadSettings, vae_dtype: torch.dtype,
                      inpainting: bool = False) -> tuple[torch.nn.Module, KLVae]:
    """The UNet2DConditionModel and the AutoencoderKL on the run's device, their latent channels checked (an
    inpainting UNet's 2C + 1 accepted where the family reads one)."""
    dirs = folder.folders
    unet = load_module("UNet2DConditionModel", dirs["unet"], settings.dtype_of("unet")).to(settings.device)
    vae = KLVae(load_module("AutoencoderKL", dirs["vae"], vae_dtype).to(settings.device))
    accepted = (vae.channels, 2 * vae.channels + 1) if inpainting else (vae.channels,)
    if unet.config.in_channels not in accepted:
        inpaint = (f"an inpainting UNet takes {2 * vae.channels + 1}: latents, mask, masked-image latents" if inpainting
                   else f"a {folder.family.label} inpainting UNet is not supported yet")
        raise NodeError(f"'{dirs['unet']}': the UNet takes {unet.config.in_channels} channels but the VAE "
                        f"makes {vae.channels}-channel latents ({inpaint})")
    return unet, vae
