"""Loading a Flux folder (folder.FAMILIES' "flux" entry): CLIP and T5 text encoders with their tokenizers, a
FluxTransformer2DModel under the flow-matching scheduler's noise process and time shift, an AutoencoderKL, each
checked against the others."""
from __future__ import annotations

from ...graph.errors import NodeError
from ..models.diffusers_model import load_module
from ..models.networks.diffusers_net import scheduler_sampling
from .flux import FlowShift, FluxTextEncoder, FluxTextModel, FluxVae
from .folder import LoadSettings, PipelineFolder, load_text_encoder, load_tokenizer
from .types import Pipeline


def load_flux(folder: PipelineFolder, settings: LoadSettings) -> Pipeline:
    """The Flux pipeline's three ports from its checked folder."""
    dirs, dtype, device = folder.folders, settings.dtype_of, settings.device
    check_settings(folder, settings)
    config = folder.scheduler_config(settings.scheduler)
    sampling, _ = scheduler_sampling(config, f"scheduler of '{folder.root}'")  # rectified flow, velocity
    clip = load_text_encoder(dirs["text_encoder"], dtype("text_encoder"), device)
    clip_tokenizer = load_tokenizer(dirs["tokenizer"], folder.index["tokenizer"][1], clip)
    t5 = load_text_encoder(dirs["text_encoder_2"], dtype("text_encoder_2"), device, "T5EncoderModel")
    t5_tokenizer = load_tokenizer(dirs["tokenizer_2"], folder.index["tokenizer_2"][1], t5)
    transformer = load_module("FluxTransformer2DModel", dirs["transformer"], dtype("transformer")).to(device)
    vae = FluxVae(load_module("AutoencoderKL", dirs["vae"], dtype("vae")).to(device))
    model = FluxTextModel(transformer, sampling, FlowShift.from_config(config), vae.factor)
    check_widths(folder, transformer.config, clip.config, t5.config, vae.channels)
    return Pipeline(model, FluxTextEncoder(clip_tokenizer, clip, t5_tokenizer, t5, model.guidance_embeds), vae)


def check_settings(folder: PipelineFolder, settings: LoadSettings) -> None:
    """A flow-matching scheduler, and none of model.pipeline's UNet settings (they cannot apply to Flux)."""
    kind = str(folder.scheduler_config(None).get("_class_name", ""))
    if "FlowMatch" not in kind:
        raise NodeError(f"'{folder.folders['scheduler']}' holds a {kind or 'scheduler without _class_name'}; a Flux "
                        f"transformer is a flow-matching model (FlowMatchEulerDiscreteScheduler)")
    if settings.prediction != "auto":
        raise NodeError(f"param 'prediction' is {settings.prediction!r}, but a Flux transformer predicts the flow "
                        f"velocity; leave it 'auto'")
    if settings.timestep != "continuous":
        raise NodeError("param 'timestep' is 'rounded', but a Flux transformer takes continuous flow time; leave it "
                        "'continuous'")


def check_widths(folder: PipelineFolder, transformer: object, clip: object, t5: object, channels: int) -> None:
    """The transformer's input widths against the encoders' and the VAE's (2x2 packing: 4 x latent channels)."""
    dirs = folder.folders
    pairs = [(transformer.joint_attention_dim, t5.d_model, "joint_attention_dim", "text_encoder_2", "d_model"),
             (transformer.pooled_projection_dim, clip.hidden_size, "pooled_projection_dim", "text_encoder",
              "hidden_size"),
             (transformer.in_channels, 4 * channels, "in_channels", "vae", "4 x latent_channels")]
    for ours, theirs, name, other, field in pairs:
        if ours != theirs:
            raise NodeError(f"'{dirs['transformer']}': {name} {ours} differs from the {other}'s {field} {theirs}: "
                            f"the components do not belong together")
