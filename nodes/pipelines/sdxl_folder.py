"""Loading an SDXL base folder (folder.FAMILIES' "sdxl" entry): CLIP-L and OpenCLIP-G text encoders with their
tokenizers, a UNet2DConditionModel with SDXL's text_time added embedding, an AutoencoderKL, each checked
against the others (Podell et al. 2023). Refiners (requires_aesthetics_score) are refused by folder.read_index."""
from __future__ import annotations

import torch

from ...graph.errors import NodeError
from ..models.diffusers_model import read_json
from ..models.networks.diffusers_net import scheduler_sampling
from .folder import LoadSettings, PipelineFolder, load_text_encoder, load_tokenizer
from .sd_folder import load_unet_and_vae
from .sdxl import SdxlTextEncoder, SdxlTextModel, pooled_width
from .types import Pipeline

ENCODERS = (("text_encoder", "tokenizer", "CLIPTextModel"), ("text_encoder_2", "tokenizer_2",
                                                               "CLIPTextModelWithProjection"))


def load_sdxl(folder: PipelineFolder, settings: LoadSettings) -> Pipeline:
    """The SDXL pipeline's three ports from its checked folder."""
    dirs = folder.folders
    sampling, prediction = scheduler_sampling(folder.scheduler_config(settings.scheduler),
                                              f"scheduler of '{folder.root}'")
    encoders, tokenizers = [], []
    for enc_name, tok_name, kind in ENCODERS:
        encoder = load_text_encoder(dirs[enc_name], settings.dtype_of(enc_name), settings.device, kind)
        encoders.append(encoder)
        tokenizers.append(load_tokenizer(dirs[tok_name], folder.index[tok_name][1], encoder))
    lengths = [int(t.model_max_length) for t in tokenizers]
    if lengths[0] != lengths[1]:
        raise NodeError(f"'{dirs['tokenizer_2']}': model_max_length {lengths[1]} differs from tokenizer/'s "
                        f"{lengths[0]}; SDXL concatenates both encoders' tokens, so they must agree")
    unet, vae = load_unet_and_vae(folder, settings, vae_dtype(folder, settings))
    check_unet(folder, unet, encoders)
    model = SdxlTextModel(unet, sampling, settings.prediction_or(prediction), settings.timestep, vae.factor)
    zeros = bool(folder.index.get("force_zeros_for_empty_prompt", True))  # the pipelines' default
    return Pipeline(model, SdxlTextEncoder((tokenizers[0], tokenizers[1]), (encoders[0], encoders[1]), zeros), vae)


def vae_dtype(folder: PipelineFolder, settings: LoadSettings) -> torch.dtype:
    """float32 for a float16 run of a VAE whose config sets force_upcast (SDXL's overflows in float16: diffusers
    decodes it upcast), unless `dtypes` names the vae."""
    dtype = settings.dtype_of("vae")
    if "vae" in settings.dtypes or dtype != torch.float16:
        return dtype
    upcast = read_json(folder.folders["vae"] / "config.json").get("force_upcast", True)
    return torch.float32 if upcast else dtype


def check_unet(folder: PipelineFolder, unet: torch.nn.Module, encoders: list[torch.nn.Module]) -> None:
    """The UNet takes SDXL's added conditioning, as wide as the two encoders give it."""
    where = f"'{folder.folders['unet']}'"
    if unet.config.addition_embed_type != "text_time":
        raise NodeError(f"{where}: addition_embed_type is {unet.config.addition_embed_type!r}, not 'text_time': "
                        f"not an SDXL UNet")
    widths = [int(e.config.hidden_size) for e in encoders]
    if sum(widths) != unet.config.cross_attention_dim:
        raise NodeError(f"{where}: cross_attention_dim {unet.config.cross_attention_dim} differs from the text "
                        f"encoders' hidden sizes {widths[0]} + {widths[1]}: the components do not belong together")
    projection = int(encoders[1].config.projection_dim)
    if pooled_width(unet) != projection:
        raise NodeError(f"{where}: the added embedding takes a pooled width of {pooled_width(unet)} besides 6 time "
                        f"ids, but text_encoder_2's projection_dim is {projection} (a refiner's UNet takes 5 ids)")
