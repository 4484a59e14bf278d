"""Loading a Stable Diffusion 3 folder (folder.FAMILIES' "sd3" entry): two CLIPTextModelWithProjection encoders and
their tokenizers, an optional T5EncoderModel (model_index.json may name text_encoder_3 null: its tokens are then
zeros, as diffusers does), an SD3Transformer2DModel under the FlowMatchEulerDiscreteScheduler's rectified flow, and
an AutoencoderKL, each checked against the others."""
from __future__ import annotations

from typing import Any

import torch

from ...graph.errors import NodeError
from ..models.diffusers_model import load_module
from ..models.networks.diffusers_net import scheduler_sampling
from .folder import LoadSettings, PipelineFolder, load_text_encoder, load_tokenizer
from .sd import KLVae
from .sd3 import ClipPair, Sd3Net, Sd3TextEncoder, Sd3TextModel
from .types import Pipeline


def load_sd3(folder: PipelineFolder, settings: LoadSettings) -> Pipeline:
    """The SD3 pipeline's three ports from its checked folder."""
    sampling, prediction = scheduler_sampling(folder.scheduler_config(settings.scheduler),
                                              f"scheduler of '{folder.root}'")
    transformer = load_module("SD3Transformer2DModel", folder.folders["transformer"],
                              settings.dtype_of("transformer")).to(settings.device)
    config = transformer.config
    vae = KLVae(load_module("AutoencoderKL", folder.folders["vae"], settings.dtype_of("vae")).to(settings.device))
    if config.in_channels != vae.channels:
        raise NodeError(f"'{folder.folders['transformer']}': the transformer takes {config.in_channels} channels but "
                        f"the VAE makes {vae.channels}-channel latents: the components do not belong together")
    clips = (clip(folder, settings, "text_encoder", "tokenizer"), clip(folder, settings, "text_encoder_2", "tokenizer_2"))
    check_clips(folder, clips, config)
    encoder = Sd3TextEncoder(clips, t5(folder, settings, int(config.joint_attention_dim)),
                             int(config.joint_attention_dim))
    model = Sd3TextModel(Sd3Net(transformer), sampling, settings.prediction_or(prediction), settings.timestep)
    return Pipeline(model, encoder, vae)


def clip(folder: PipelineFolder, settings: LoadSettings, encoder_name: str, tokenizer_name: str) -> ClipPair:
    encoder = load_text_encoder(folder.folders[encoder_name], settings.dtype_of(encoder_name), settings.device,
                                "CLIPTextModelWithProjection")
    return ClipPair(load_tokenizer(folder.folders[tokenizer_name], folder.index[tokenizer_name][1], encoder), encoder)


def check_clips(folder: PipelineFolder, clips: tuple[ClipPair, ClipPair], config: Any) -> None:
    """Both CLIPs' tokens fit the joint width (diffusers would crop them silently) and their pooled outputs make
    the transformer's pooled_projection_dim."""
    widths = [int(c.encoder.config.hidden_size) for c in clips]
    if sum(widths) > config.joint_attention_dim:
        raise NodeError(f"'{folder.root}': the CLIP encoders' hidden sizes {widths[0]} + {widths[1]} exceed the "
                        f"transformer's joint_attention_dim {config.joint_attention_dim}: the components do not "
                        f"belong together")
    pooled = [int(c.encoder.config.projection_dim) for c in clips]
    if sum(pooled) != config.pooled_projection_dim:
        raise NodeError(f"'{folder.root}': the CLIP encoders' projection_dim {pooled[0]} + {pooled[1]} differ from "
                        f"the transformer's pooled_projection_dim {config.pooled_projection_dim}: the components do "
                        f"not belong together")


def t5(folder: PipelineFolder, settings: LoadSettings, width: int) -> tuple[Any, torch.nn.Module] | None:
    """The T5 tokenizer and encoder, or None when model_index.json names no text_encoder_3."""
    present = [name for name in ("text_encoder_3", "tokenizer_3") if name in folder.folders]
    if not present:
        return None
    if len(present) == 1:
        missing = ({"text_encoder_3", "tokenizer_3"} - set(present)).pop()
        raise NodeError(f"'{folder.root}' has a {present[0]} but model_index.json names no {missing}: T5 needs both "
                        f"(or neither, for zeros in its place)")
    encoder = load_text_encoder(folder.folders["text_encoder_3"], settings.dtype_of("text_encoder_3"),
                                settings.device, "T5EncoderModel")
    if int(encoder.config.d_model) != width:
        raise NodeError(f"'{folder.folders['text_encoder_3']}': d_model {encoder.config.d_model} differs from the "
                        f"transformer's joint_attention_dim {width}: the components do not belong together")
    return load_tokenizer(folder.folders["tokenizer_3"], folder.index["tokenizer_3"][1], encoder), encoder
