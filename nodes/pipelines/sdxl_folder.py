"""Loading an SDXL folder (folder.FAMILIES' "sdxl" entry): a base's CLIP-L and OpenCLIP-G text encoders with their
tokenizers (a refiner's OpenCLIP-G alone: model_index.json names text_encoder and tokenizer null), a
UNet2DConditionModel with SDXL's text_time added embedding (6 time ids; a refiner's, requires_aesthetics_score,
5), an AutoencoderKL, each checked against the others (Podell et al. 2023)."""
from __future__ import annotations

import torch

from ...graph.errors import NodeError
from ..models.diffusers_model import read_json
from ..models.networks.diffusers_net import scheduler_sampling
from .folder import LoadSettings, PipelineFolder, load_text_encoder, load_tokenizer
from .sd_folder import load_unet_and_vae
from .sdxl import BASE_IDS, REFINER_IDS, SdxlTextEncoder, SdxlTextModel, pooled_width
from .types import Pipeline

ENCODERS = (("text_encoder", "tokenizer", "CLIPTextModel"), ("text_encoder_2", "tokenizer_2",
                                                               "CLIPTextModelWithProjection"))


def load_sdxl(folder: PipelineFolder, settings: LoadSettings) -> Pipeline:
    """The SDXL pipeline's three ports from its checked folder."""
    dirs = folder.folders
    sampling, prediction = scheduler_sampling(folder.scheduler_config(settings.scheduler),
                                              f"scheduler of '{folder.root}'")
    encoders, tokenizers = [], []
    for enc_name, tok_name, kind in present_encoders(folder):
        encoder = load_text_encoder(dirs[enc_name], settings.dtype_of(enc_name), settings.device, kind)
        encoders.append(encoder)
        tokenizers.append(load_tokenizer(dirs[tok_name], folder.index[tok_name][1], encoder))
    lengths = [int(t.model_max_length) for t in tokenizers]
    if len(set(lengths)) > 1:
        raise NodeError(f"'{dirs['tokenizer_2']}': model_max_length {lengths[1]} differs from tokenizer/'s "
                        f"{lengths[0]}; SDXL concatenates both encoders' tokens, so they must agree")
    aesthetic = bool(folder.index.get("requires_aesthetics_score", False))  # a refiner
    ids = REFINER_IDS if aesthetic else BASE_IDS
    unet, vae = load_unet_and_vae(folder, settings, vae_dtype(folder, settings))
    check_unet(folder, unet, encoders, ids)
    model = SdxlTextModel(unet, sampling, settings.prediction_or(prediction), settings.timestep, vae.factor, ids)
    zeros = bool(folder.index.get("force_zeros_for_empty_prompt", True))  # the pipelines' default
    return Pipeline(model, SdxlTextEncoder(tuple(tokenizers), tuple(encoders), zeros, aesthetic), vae)


def present_encoders(folder: PipelineFolder) -> tuple[tuple[str, str, str], ...]:
    """Both encoders, or text_encoder_2 alone where model_index.json names no text_encoder and tokenizer (a
    refiner's; diffusers' encode_prompt then reads text_encoder_2 only)."""
    first = [name for name in ENCODERS[0][:2] if name in folder.folders]
    if len(first) == 1:
        missing = ({"text_encoder", "tokenizer"} - set(first)).pop()
        raise NodeError(f"'{folder.root}' has a {first[0]} but model_index.json names no {missing}: CLIP-L needs both "
                        f"(or neither, as an SDXL refiner)")
    return ENCODERS if first else ENCODERS[1:]


def vae_dtype(folder: PipelineFolder, settings: LoadSettings) -> torch.dtype:
    """float32 for a float16 run of a VAE whose config sets force_upcast (SDXL's overflows in float16: diffusers
    decodes it upcast), unless `dtypes` names the vae."""
    dtype = settings.dtype_of("vae")
    if "vae" in settings.dtypes or dtype != torch.float16:
        return dtype
    upcast = read_json(folder.folders["vae"] / "config.json").get("force_upcast", True)
    return torch.float32 if upcast else dtype


def check_unet(folder: PipelineFolder, unet: torch.nn.Module, encoders: list[torch.nn.Module], ids: int) -> None:
    """The UNet takes SDXL's added conditioning, as wide as the encoders and `ids` time ids give it."""
    where = f"'{folder.folders['unet']}'"
    if unet.config.addition_embed_type != "text_time":
        raise NodeError(f"{where}: addition_embed_type is {unet.config.addition_embed_type!r}, not 'text_time': "
                        f"not an SDXL UNet")
    widths = [int(e.config.hidden_size) for e in encoders]
    if sum(widths) != unet.config.cross_attention_dim:
        raise NodeError(f"{where}: cross_attention_dim {unet.config.cross_attention_dim} differs from the text "
                        f"encoders' hidden sizes {' + '.join(map(str, widths))}: the components do not belong "
                        f"together")
    projection = int(encoders[-1].config.projection_dim)
    if pooled_width(unet, ids) != projection:
        other = REFINER_IDS + BASE_IDS - ids
        hint = (f"; it takes {other} ids, as {'a refiner' if other == REFINER_IDS else 'a base'}: check "
                f"requires_aesthetics_score in model_index.json" if pooled_width(unet, other) == projection else "")
        raise NodeError(f"{where}: the added embedding takes a pooled width of {pooled_width(unet, ids)} besides "
                        f"{ids} time ids, but text_encoder_2's projection_dim is {projection}{hint}")
