"""model.pipeline: a local Stable Diffusion 1.x/2.x diffusers pipeline folder as three ports: the
text-conditioned UNet (bound to a prompt by model.text_condition), the text encoder and the VAE.

Loaded through diffusers' and transformers' own classes, offline, from safetensors only (pickle-only
components refused unopened), with strict keys; the scheduler config gives our ModelSampling exactly as
model.diffusers reads it (its solver settings are ignored: pick a sampler and a schedule node). SDXL, SD3
and Flux folders are named and refused as not yet supported."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import Field

from ...graph.errors import NodeError

from ..api import Node, node
from ..core.context import NodeContext
from ..models.diffusers_model import DTYPES, load_module, read_json
from ..models.networks.diffusers_net import scheduler_sampling
from ..models.parametrisation import TimestepMode
from .folder import component, load_text_encoder, load_tokenizer, pipeline_files, read_index
from .sd import ClipTextEncoder, KLVae, UNetTextModel
from .types import TextEncoder, TextModel, Vae


class Pipeline(NamedTuple):
    model: TextModel
    text_encoder: TextEncoder
    vae: Vae


@node("model.pipeline")
class ModelPipeline(Node):
    """A Stable Diffusion pipeline folder (Rombach et al. 2022): UNet as the Denoiser of Karras et al. (2022), eq. 7."""

    path: str = Field(min_length=1, description="local diffusers pipeline folder: model_index.json, unet/, "
                                                "text_encoder/, tokenizer/, vae/, scheduler/")
    scheduler: dict[str, Any] | None = Field(None, description="diffusers scheduler config keys overriding "
                                             "scheduler/scheduler_config.json (e.g. prediction_type)")
    prediction: Literal["auto", "eps", "v"] = Field("auto", description="UNet output; 'auto' = the scheduler's "
                                                    "prediction_type (SD 2.x 768: v)")
    timestep: TimestepMode = Field("continuous", description="the UNet sees continuous timesteps (diffusers' "
                                   "Euler) or the nearest integer one (DDIM, DPM-Solver)")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="weights' dtype of every "
                                                             "component; latents stay in the sampler's dtype")

    def input_files(self) -> list[Path]:
        """The pipeline folder this node reads (a server confines it to its model roots)."""
        return [Path(self.path).expanduser()]

    def external_state(self) -> Any:
        """Sizes and mtimes of every component's files: a rewritten checkpoint invalidates the cache."""
        return pipeline_files(Path(self.path)) if Path(self.path).is_dir() else None

    def run(self, ctx: NodeContext) -> Pipeline:
        root = Path(self.path)
        index = read_index(root)
        folders = {name: component(root, index, name) for name in ("unet", "text_encoder", "tokenizer", "vae",
                                                                  "scheduler")}
        dtype, device = DTYPES[self.dtype], ctx.device
        sched = {**read_json(folders["scheduler"] / "scheduler_config.json"), **(self.scheduler or {})}
        sampling, prediction = scheduler_sampling(sched, f"scheduler of '{root}'")
        encoder = load_text_encoder(folders["text_encoder"], dtype, device)
        tokenizer = load_tokenizer(folders["tokenizer"], index["tokenizer"][1], encoder)
        unet = load_module("UNet2DConditionModel", folders["unet"], dtype).to(device)
        vae = KLVae(load_module("AutoencoderKL", folders["vae"], dtype).to(device))
        if unet.config.in_channels != vae.channels:
            raise NodeError(f"'{folders['unet']}': the UNet takes {unet.config.in_channels} channels but the VAE "
                            f"makes {vae.channels}-channel latents (an inpainting UNet?); not supported yet")
        model = UNetTextModel(unet, sampling, prediction if self.prediction == "auto" else self.prediction,
                              self.timestep)
        if model.context_dim != encoder.config.hidden_size:
            raise NodeError(f"'{folders['text_encoder']}': hidden_size {encoder.config.hidden_size} differs from the "
                            f"UNet's cross_attention_dim {model.context_dim}: the components do not belong together")
        return Pipeline(model, ClipTextEncoder(tokenizer, encoder), vae)
