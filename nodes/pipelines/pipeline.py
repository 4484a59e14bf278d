"""model.pipeline: a local diffusers pipeline folder as three ports: the text-conditioned network (bound to a
prompt by model.text_condition), the text encoder and the VAE.

Loaded through diffusers' and transformers' own classes, offline, from safetensors only (pickle-only
components refused unopened), with strict keys; model_index.json's _class_name picks the family
(folder.FAMILIES), whose loader reads the components; the scheduler config gives our ModelSampling exactly
as model.diffusers reads it (its solver settings are ignored: pick a sampler and a schedule node). Under the
run's memory manager (NodeContext.residency) the components load onto its offload device ('cpu') and move to
the run's device when used (runtime/memory.py)."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..models.diffusers_model import DTYPES
from ..models.parametrisation import TimestepMode
from .folder import LoadSettings, open_folder, pipeline_files
from .residency import manage_pipeline
from .types import Pipeline


@node("model.pipeline")
class ModelPipeline(Node):
    """An SD 1.x/2.x (Rombach et al. 2022) or SDXL (Podell et al. 2023) pipeline folder: its UNet as a Karras et al. (2022) Denoiser."""

    path: str = Field(min_length=1, description="local diffusers pipeline folder: model_index.json, unet/ or "
                                                "transformer/, text_encoder(s)/, tokenizer(s)/, vae/, scheduler/")
    scheduler: dict[str, Any] | None = Field(None, description="diffusers scheduler config keys overriding "
                                             "scheduler/scheduler_config.json (e.g. prediction_type)")
    prediction: Literal["auto", "eps", "v"] = Field("auto", description="UNet output; 'auto' = the scheduler's "
                                                    "prediction_type (SD 2.x 768: v)")
    timestep: TimestepMode = Field("continuous", description="the UNet sees continuous timesteps (diffusers' "
                                   "Euler) or the nearest integer one (DDIM, DPM-Solver)")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="weights' dtype of every "
                                                             "component; latents stay in the sampler's dtype")
    dtypes: dict[str, Literal["float32", "float16", "bfloat16"]] | None = Field(
        None, description="per-component weights' dtype overriding 'dtype', e.g. {\"vae\": \"float32\"}")

    def input_files(self) -> list[Path]:
        """The pipeline folder this node reads (a server confines it to its model roots)."""
        return [Path(self.path).expanduser()]

    def external_state(self) -> Any:
        """Sizes and mtimes of every component's files: a rewritten checkpoint invalidates the cache."""
        return pipeline_files(Path(self.path)) if Path(self.path).is_dir() else None

    def run(self, ctx: NodeContext) -> Pipeline:
        folder = open_folder(Path(self.path))
        unknown = sorted(set(self.dtypes or {}) - set(folder.family.components))
        if unknown:
            raise NodeError(f"param 'dtypes' names {', '.join(unknown)}, which a {folder.family.label} pipeline does "
                            f"not have; its components: {', '.join(folder.family.components)}")
        module, function = folder.family.loader.split(":")
        load = getattr(importlib.import_module(f".{module}", __package__), function)
        dtypes = {name: DTYPES[d] for name, d in (self.dtypes or {}).items()}
        managed = ctx.residency  # with a memory manager, load onto its offload device; it moves what is used
        device = ctx.device if managed is None else managed.offload_device
        pipeline = load(folder, LoadSettings(DTYPES[self.dtype], device, self.scheduler, self.prediction,
                                             self.timestep, dtypes))
        if managed is not None:
            manage_pipeline(ctx.node_id, pipeline, managed)
        return pipeline
