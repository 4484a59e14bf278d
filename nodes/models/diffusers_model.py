"""model.diffusers: a user's diffusers-format model folder (UNet2DModel, or DiT class-conditional)
loaded from a local path, from safetensors only (never unpickled), with no network access.

`path` is a pipeline folder (model_index.json, unet/ or transformer/, scheduler/) or a bare model
folder (config.json + diffusion_pytorch_model.safetensors); the noise process and prediction
type come from scheduler/scheduler_config.json, or from the `scheduler` param (whose keys also
override the file's). Text-conditioned networks (UNet2DConditionModel, SD3/Flux transformers)
need encoder_hidden_states from text encoders: refused here; model.pipeline loads a whole SD pipeline."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from .labelled import Labelled
from .networks.diffusers_net import DiffusersDenoiser, DiffusersNet, scheduler_sampling
from .parametrisation import TimestepMode
from .safetensors_model import file_state, refuse_pickles

WEIGHTS = "diffusion_pytorch_model.safetensors"
SUPPORTED = ("UNet2DModel", "DiTTransformer2DModel")
TEXT_CONDITIONED = ("UNet2DConditionModel", "SD3Transformer2DModel", "FluxTransformer2DModel",
                    "PixArtTransformer2DModel", "SanaTransformer2DModel", "Transformer2DModel")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@node("model.diffusers")
class ModelDiffusers(Node):
    """A diffusers UNet2DModel or DiT folder as the Denoiser of Karras et al. (2022), eq. 7 (DDPM/v/flow outputs)."""

    path: str = Field(min_length=1, description="local diffusers pipeline folder (with unet/ or transformer/ and "
                                                "scheduler/) or model folder (config.json + safetensors weights)")
    subfolder: str | None = Field(None, min_length=1, description="the model's folder inside 'path'; default "
                                  "'path' itself if it has config.json, else unet/, else transformer/")
    scheduler: dict[str, Any] | None = Field(None, description="diffusers scheduler config keys (beta_schedule, "
                                             "prediction_type, ...): override scheduler/scheduler_config.json, or "
                                             "stand in for it (a bare model folder has none)")
    prediction: Literal["auto", "eps", "v", "x0", "flow"] = Field("auto", description="network output; 'auto' = "
                                                                  "the scheduler's prediction_type")
    timestep: TimestepMode = Field("continuous", description="the network sees continuous timesteps or the "
                                   "nearest integer one (as diffusers' DDIM/DDPM/DPM-Solver feed it)")
    null_class: int | None = Field(None, ge=0, description="UNet2DModel with num_class_embeds: the label trained "
                                   "as 'no class' (CFG's dropped label); None = no unconditional model")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="weights' dtype; inputs and "
                                                             "outputs stay in the sampler's dtype")

    def input_files(self) -> list[Path]:
        """The folders this node reads (a server confines them to its model roots)."""
        root = Path(self.path).expanduser()
        return [root] + ([root / self.subfolder] if self.subfolder else [])

    def external_state(self) -> Any:
        """Sizes and mtimes of the configs and weights: a rewritten checkpoint invalidates the cache."""
        root = Path(self.path)
        try:
            folder = model_folder(root, self.subfolder)
        except NodeError:
            return None  # run() reports it
        files = [folder / "config.json", *sorted(folder.glob("diffusion_pytorch_model*.safetensors*")),
                 *scheduler_files(root, folder)]
        return {str(f): file_state(f) for f in files}

    def run(self) -> Labelled:
        """The network bound to its null class (or unconditional); model.condition binds a class."""
        root = Path(self.path)
        folder = model_folder(root, self.subfolder)
        config = read_json(folder / "config.json")
        kind = check_class(config, folder / "config.json")
        check_weights(folder)
        classes, null = self.labels(kind, config)
        sampling, prediction = scheduler_sampling(self.scheduler_config(root, folder), f"scheduler of '{root}'")
        net = DiffusersNet(load_module(kind, folder, DTYPES[self.dtype]))
        return DiffusersDenoiser(net, sampling, prediction if self.prediction == "auto" else self.prediction,
                                 self.timestep, classes, null)

    def labels(self, kind: str, config: dict[str, Any]) -> tuple[int, int | None]:
        """(number of classes, null label): 0 classes for an unconditional UNet; DiT's null is its extra embedding."""
        if kind == "DiTTransformer2DModel":
            if self.null_class is not None:
                raise NodeError("param 'null_class' is for UNet2DModel; a DiT's null label is always "
                                "num_embeds_ada_norm (its extra embedding); remove it")
            if not config.get("num_embeds_ada_norm"):
                raise NodeError("this DiT has no class embedding (num_embeds_ada_norm is unset); only "
                                "class-conditional DiTs are supported")
            return int(config["num_embeds_ada_norm"]), int(config["num_embeds_ada_norm"])
        if config.get("class_embed_type") is not None:
            raise NodeError(f"UNet2DModel class_embed_type {config['class_embed_type']!r} is not supported "
                            f"(only the default label embedding of num_class_embeds)")
        classes = int(config.get("num_class_embeds") or 0)
        if self.null_class is not None and not self.null_class < classes:
            raise NodeError(f"param 'null_class' is {self.null_class}, but the model has "
                            f"{'no class embedding' if not classes else f'labels 0..{classes - 1}'}")
        return classes, self.null_class

    def scheduler_config(self, root: Path, folder: Path) -> dict[str, Any]:
        """The scheduler config file's keys (if there is one) updated by param 'scheduler'."""
        found = scheduler_files(root, folder)
        if not found and self.scheduler is None:
            raise NodeError(f"'{root}' has no scheduler/scheduler_config.json, so the noise process is unknown; add "
                            f"one, or pass param 'scheduler' (e.g. {{\"beta_schedule\": \"linear\", "
                            f"\"prediction_type\": \"epsilon\"}})")
        return {**(read_json(found[0]) if found else {}), **(self.scheduler or {})}


def model_folder(root: Path, subfolder: str | None) -> Path:
    """The folder holding the network's config.json (NodeError naming what is missing)."""
    if not root.is_dir():
        raise NodeError(f"param 'path': '{root}' is not a directory; give a local diffusers model or pipeline folder")
    candidates = [root / subfolder] if subfolder else [root, root / "unet", root / "transformer"]
    for folder in candidates:
        if (folder / "config.json").is_file():
            return folder
    names = " or ".join(f"'{c / 'config.json'}'" for c in candidates)
    raise NodeError(f"'{root}' is not a diffusers model folder: no {names}")


def scheduler_files(root: Path, folder: Path) -> list[Path]:
    """The scheduler config that goes with the model: the pipeline's scheduler/, beside the model, or a sibling."""
    places = [root / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json",
              folder.parent / "scheduler" / "scheduler_config.json"]
    return [p for p in dict.fromkeys(places) if p.is_file()][:1]


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise NodeError(f"'{path}' is not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise NodeError(f"'{path}' must hold a JSON object, got {type(data).__name__}")
    return data


def check_class(config: dict[str, Any], path: Path) -> str:
    """The network class named by config.json, if samplegraph can condition it."""
    kind = str(config.get("_class_name", ""))
    if kind in TEXT_CONDITIONED:
        raise NodeError(f"'{path}' is a {kind}, which needs text-encoder conditioning (encoder_hidden_states); "
                        f"load its whole pipeline folder with model.pipeline (Stable Diffusion 1.x/2.x) instead; "
                        f"model.diffusers supports {', '.join(SUPPORTED)}")
    if kind not in SUPPORTED:
        raise NodeError(f"'{path}': _class_name {kind or None!r} is not supported; supported: {', '.join(SUPPORTED)}")
    if config.get("time_embedding_type", "positional") == "fourier":
        raise NodeError(f"'{path}': a UNet2DModel with fourier time embedding (score-SDE VE) is not supported")
    return kind


def check_weights(folder: Path) -> None:
    """safetensors weights exist; pickle-only checkpoints are refused without being opened."""
    if (folder / WEIGHTS).is_file() or (folder / f"{WEIGHTS}.index.json").is_file():
        return
    refuse_pickles(folder, "", f"'{WEIGHTS}'")
    raise NodeError(f"'{folder}' has no '{WEIGHTS}' (nor a sharded '{WEIGHTS}.index.json')")


def load_module(kind: str, folder: Path, dtype: torch.dtype) -> torch.nn.Module:
    """The network from safetensors, offline, strictly: any missing, unexpected or mis-shaped weight is an error."""
    try:
        import diffusers
    except ImportError as e:
        raise NodeError(f"model.diffusers needs the diffusers package ({e}); install it with "
                        f"`pip install samplegraph[diffusers]`") from None
    try:
        module, info = getattr(diffusers, kind).from_pretrained(
            folder, use_safetensors=True, local_files_only=True, torch_dtype=dtype, output_loading_info=True,
            low_cpu_mem_usage=False)  # one loading path whether or not accelerate is installed
    except Exception as e:  # diffusers raises OSError, ValueError, RuntimeError, SafetensorError...
        why = " ".join(str(e).split())[:400] or type(e).__name__
        raise NodeError(f"cannot load the {kind} in '{folder}': {why}") from None
    check_loading_info(info, folder, WEIGHTS)
    return module.eval().requires_grad_(False)


def check_loading_info(info: dict[str, Any], folder: Path, weights: str) -> None:
    """Strict keys: a NodeError naming the first missing, unexpected or mis-shaped weights of `from_pretrained`."""
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise NodeError(f"'{folder / weights}' does not match '{folder / 'config.json'}': "
                        + "; ".join(f"{k.replace('_', ' ')} {sorted(map(str, v))[:3]}" for k, v in problems.items()))
