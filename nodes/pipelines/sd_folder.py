"""Loading a Stable Diffusion 1.x/2.x folder (folder.FAMILIES' "sd" entry): CLIP text encoder and tokenizer, a
UNet2DConditionModel under the scheduler's noise process, an AutoencoderKL, each checked against the others."""
from __future__ import annotations

from ...graph.errors import NodeError
from ..models.diffusers_model import load_module
from ..models.networks.diffusers_net import scheduler_sampling
from .folder import LoadSettings, PipelineFolder, load_text_encoder, load_tokenizer
from .sd import ClipTextEncoder, KLVae, UNetTextModel
from .types import Pipeline


def load_sd(folder: PipelineFolder, settings: LoadSettings) -> Pipeline:
    """The SD pipeline's three ports from its checked folder."""
    dirs, dtype, device = folder.folders, settings.dtype_of, settings.device
    sampling, prediction = scheduler_sampling(folder.scheduler_config(settings.scheduler),
                                              f"scheduler of '{folder.root}'")
    encoder = load_text_encoder(dirs["text_encoder"], dtype("text_encoder"), device)
    tokenizer = load_tokenizer(dirs["tokenizer"], folder.index["tokenizer"][1], encoder)
    unet = load_module("UNet2DConditionModel", dirs["unet"], dtype("unet")).to(device)
    vae = KLVae(load_module("AutoencoderKL", dirs["vae"], dtype("vae")).to(device))
    if unet.config.in_channels not in (vae.channels, 2 * vae.channels + 1):
        raise NodeError(f"'{dirs['unet']}': the UNet takes {unet.config.in_channels} channels but the VAE "
                        f"makes {vae.channels}-channel latents (an inpainting UNet takes {2 * vae.channels + 1}: "
                        f"latents, mask, masked-image latents)")
    model = UNetTextModel(unet, sampling, settings.prediction_or(prediction), settings.timestep)
    if model.context_dim != encoder.config.hidden_size:
        raise NodeError(f"'{dirs['text_encoder']}': hidden_size {encoder.config.hidden_size} differs from the "
                        f"UNet's cross_attention_dim {model.context_dim}: the components do not belong together")
    return Pipeline(model, ClipTextEncoder(tokenizer, encoder), vae)
