"""Reading a local diffusers pipeline folder: model_index.json, its component folders, and each component
loaded through diffusers' or transformers' own class, offline, from safetensors only, with strict keys.

Every failure is a NodeError naming the file or folder and the fix; pickle-only components are refused
before anything is opened (models/safetensors_model.refuse_pickles)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ...graph.errors import NodeError
from ..models.diffusers_model import check_loading_info, read_json
from ..models.safetensors_model import file_state, refuse_pickles

INDEX = "model_index.json"
LEGACY_CLIP_EOS = 2
# component -> (its weights file or None, the classes samplegraph loads it as)
Components = dict[str, tuple[str | None, tuple[str, ...]]]


class Family(NamedTuple):
    """A pipeline family: the model_index.json _class_name values it reads, its components, its loader."""

    label: str  # e.g. "Stable Diffusion 1.x/2.x"
    classes: tuple[str, ...]  # model_index.json _class_name values
    components: Components
    loader: str  # "module:function" under nodes/pipelines, called as function(PipelineFolder, LoadSettings)
    # components model_index.json may name null (SD3's T5: diffusers then uses zeros; an SDXL refiner's CLIP-L)
    optional: tuple[str, ...] = ()


CLIP_TOKENIZERS = ("CLIPTokenizer", "CLIPTokenizerFast")
SD_COMPONENTS: Components = {
    "unet": ("diffusion_pytorch_model.safetensors", ("UNet2DConditionModel",)),
    "text_encoder": ("model.safetensors", ("CLIPTextModel",)),
    "tokenizer": (None, CLIP_TOKENIZERS),
    "vae": ("diffusion_pytorch_model.safetensors", ("AutoencoderKL",)),
    "scheduler": (None, ()),
}
SDXL_COMPONENTS: Components = {
    **SD_COMPONENTS,
    "text_encoder_2": ("model.safetensors", ("CLIPTextModelWithProjection",)),
    "tokenizer_2": (None, CLIP_TOKENIZERS),
}
FLUX_COMPONENTS: Components = {
    "transformer": ("diffusion_pytorch_model.safetensors", ("FluxTransformer2DModel",)),
    "text_encoder": ("model.safetensors", ("CLIPTextModel",)),
    "text_encoder_2": ("model.safetensors", ("T5EncoderModel",)),
    "tokenizer": (None, CLIP_TOKENIZERS),
    "tokenizer_2": (None, ("T5Tokenizer", "T5TokenizerFast")),
    "vae": ("diffusion_pytorch_model.safetensors", ("AutoencoderKL",)),
    "scheduler": (None, ()),  # any flow-matching scheduler (flux_folder checks)
}
SD3_COMPONENTS: Components = {
    "transformer": ("diffusion_pytorch_model.safetensors", ("SD3Transformer2DModel",)),
    "text_encoder": ("model.safetensors", ("CLIPTextModelWithProjection",)),
    "text_encoder_2": ("model.safetensors", ("CLIPTextModelWithProjection",)),
    "text_encoder_3": ("model.safetensors", ("T5EncoderModel",)),
    "tokenizer": (None, CLIP_TOKENIZERS),
    "tokenizer_2": (None, CLIP_TOKENIZERS),
    "tokenizer_3": (None, ("T5TokenizerFast", "T5Tokenizer")),
    "vae": ("diffusion_pytorch_model.safetensors", ("AutoencoderKL",)),
    "scheduler": (None, ("FlowMatchEulerDiscreteScheduler",)),
}
# every family model.pipeline reads; a new family adds one entry (and its loader module)
FAMILIES: tuple[Family, ...] = (
    Family("Stable Diffusion 1.x/2.x", ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                                         "StableDiffusionInpaintPipeline"), SD_COMPONENTS, "sd_folder:load_sd"),
    Family("SDXL", ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"), SDXL_COMPONENTS,
           "sdxl_folder:load_sdxl", optional=("text_encoder", "tokenizer")),  # null in a refiner's model_index
    Family("Stable Diffusion 3", ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline"), SD3_COMPONENTS,
           "sd3_folder:load_sd3", optional=("text_encoder_3", "tokenizer_3")),
    Family("Flux", ("FluxPipeline", "FluxImg2ImgPipeline"), FLUX_COMPONENTS, "flux_folder:load_flux"),
)
# pipelines whose networks take more than the families' (inpainting UNets and transformers beyond SD 1.x/2.x's)
NOT_YET = {"StableDiffusionXLInpaintPipeline": "SDXL inpainting", "StableDiffusion3InpaintPipeline": "SD3 inpainting",
           "FluxInpaintPipeline": "Flux inpainting", "FluxFillPipeline": "Flux Fill"}


@dataclass(frozen=True)
class PipelineFolder:
    """A checked pipeline folder: its root, model_index.json, family and each component's folder."""

    root: Path
    index: dict[str, Any]
    family: Family
    folders: dict[str, Path]

    def scheduler_config(self, overrides: dict[str, Any] | None) -> dict[str, Any]:
        return {**read_json(self.folders["scheduler"] / "scheduler_config.json"), **(overrides or {})}


@dataclass(frozen=True)
class LoadSettings:
    """model.pipeline's parameters as every family's loader reads them."""

    dtype: torch.dtype  # every component's weights, unless `dtypes` names the component
    device: torch.device
    scheduler: dict[str, Any] | None  # scheduler_config.json overrides
    prediction: str  # "auto" or the network's output parametrisation
    timestep: Any  # TimestepMode
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)  # component name -> its weights' dtype

    def dtype_of(self, component: str) -> torch.dtype:
        return self.dtypes.get(component, self.dtype)

    def prediction_or(self, from_scheduler: Any) -> Any:
        return from_scheduler if self.prediction == "auto" else self.prediction


def supported() -> str:
    return "; ".join(f"{', '.join(f.classes)} ({f.label})" for f in FAMILIES)


def read_index(root: Path) -> tuple[dict[str, Any], Family]:
    """model_index.json of a pipeline folder and its family (NodeError for other classes, named)."""
    if not root.is_dir():
        raise NodeError(f"param 'path': '{root}' is not a directory; give a local diffusers pipeline folder")
    if not (root / INDEX).is_file():
        raise NodeError(f"'{root}' has no {INDEX}, so it is not a diffusers pipeline folder (for a bare UNet2DModel "
                        f"or DiT folder use model.diffusers)")
    index = read_json(root / INDEX)
    kind = str(index.get("_class_name", ""))
    family = next((f for f in FAMILIES if kind in f.classes), None)
    if family is not None:
        return index, family
    if kind in NOT_YET:
        raise NodeError(f"'{root / INDEX}' is a {kind} ({NOT_YET[kind]}), which model.pipeline does not support "
                        f"yet; supported: {supported()}")
    raise NodeError(f"'{root / INDEX}': _class_name {kind or None!r} is not supported; supported: {supported()}")


def open_folder(root: Path) -> PipelineFolder:
    """The folder checked: its family known and every component it needs present."""
    index, family = read_index(root)
    return PipelineFolder(root, index, family, {name: component(root, index, family, name)
                                                for name in family.components if not absent(index, family, name)})


def absent(index: dict[str, Any], family: Family, name: str) -> bool:
    """An optional component that model_index.json names null ([null, null]), as save_pretrained writes a None."""
    return name in family.optional and index.get(name) in ([None, None], None)


def component(root: Path, index: dict[str, Any], family: Family, name: str) -> Path:
    """The folder of component `name`, checked against the class model_index.json names for it."""
    weights, classes = family.components[name]
    entry = index.get(name)
    if not (isinstance(entry, list) and len(entry) == 2 and entry[1] is not None):
        raise NodeError(f"'{root / INDEX}' names no '{name}' component; a {family.label} pipeline needs "
                        f"{', '.join(family.components)}")
    if classes and entry[1] not in classes:
        raise NodeError(f"'{root / INDEX}': component '{name}' is a {entry[1]}; supported: {', '.join(classes)}")
    folder = root / name
    if not folder.is_dir():
        raise NodeError(f"'{root}' is missing the '{name}/' folder that {INDEX} lists ({entry[1]}); copy the "
                        f"whole pipeline (save_pretrained writes every component)")
    if weights is not None and not (folder / weights).is_file() and not (folder / f"{weights}.index.json").is_file():
        refuse_pickles(folder, f"component '{name}': ", f"'{weights}'")
        raise NodeError(f"'{folder}' has no '{weights}' (nor a sharded '{weights}.index.json')")
    return folder


def pipeline_files(root: Path) -> dict[str, list[int] | None]:
    """Sizes and mtimes of model_index.json and of every file in its components' folders (the cache key's part)."""
    try:
        names = [k for k, v in read_json(root / INDEX).items() if isinstance(v, list)]
    except NodeError:
        names = []  # run() reports the unreadable index
    files = [root / INDEX, *(f for name in sorted(names) for f in sorted((root / name).glob("*")) if f.is_file())]
    return {str(f): file_state(f) for f in files}


def load_text_encoder(folder: Path, dtype: torch.dtype, device: torch.device,
                      kind: str = "CLIPTextModel") -> torch.nn.Module:
    """A transformers text encoder of class `kind` (CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel) from
    model.safetensors (or its shards), offline, strict."""
    transformers = import_transformers()
    try:
        module, info = getattr(transformers, kind).from_pretrained(
            folder, local_files_only=True, use_safetensors=True, dtype=dtype, output_loading_info=True)
    except Exception as e:  # transformers raises OSError, ValueError, RuntimeError, SafetensorError...
        raise NodeError(f"cannot load the {kind} in '{folder}': {' '.join(str(e).split())[:400]}") from None
    check_loading_info(info, folder, "model.safetensors")
    return module.eval().requires_grad_(False).to(device)


def load_tokenizer(folder: Path, kind: str, encoder: torch.nn.Module) -> Any:
    """A tokenizer (offline), checked against its encoder: ids within its vocabulary, context in range (where the
    encoder has absolute positions: CLIP; T5's are relative), the same end token."""
    transformers = import_transformers()
    try:
        tokenizer = getattr(transformers, kind).from_pretrained(folder, local_files_only=True)
    except Exception as e:
        raise NodeError(f"cannot load the {kind} in '{folder}': {' '.join(str(e).split())[:400]}") from None
    config = encoder.config
    if len(tokenizer) > config.vocab_size:
        raise NodeError(f"'{folder}' has {len(tokenizer)} tokens but the text encoder's vocab_size is "
                        f"{config.vocab_size}: the tokenizer does not belong to this text_encoder")
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and tokenizer.model_max_length > positions:
        raise NodeError(f"'{folder}': model_max_length {tokenizer.model_max_length} exceeds the text encoder's "
                        f"max_position_embeddings {positions}")
    # eos_token_id 2 is the stale default of CLIP configs written before transformers #24773 (SD 1.5's, SDXL's):
    # transformers then pools at the largest token id, which is the end token only if it is the vocabulary's last
    eos = len(tokenizer) - 1 if config.eos_token_id == LEGACY_CLIP_EOS else config.eos_token_id
    if tokenizer.eos_token_id != eos:
        raise NodeError(f"'{folder}': the tokenizer's end token is id {tokenizer.eos_token_id}, the text encoder "
                        f"expects {eos} (eos_token_id {config.eos_token_id}): the tokenizer does not belong to this "
                        f"text encoder")
    return tokenizer


def import_transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise NodeError(f"model.pipeline needs the transformers package ({e}); install it with "
                        f"`pip install samplegraph[diffusers]`") from None
    return transformers
