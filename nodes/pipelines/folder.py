"""Reading a local diffusers pipeline folder: model_index.json, its component folders, and each component
loaded through diffusers' or transformers' own class, offline, from safetensors only, with strict keys.

Every failure is a NodeError naming the file or folder and the fix; pickle-only components are refused
before anything is opened (models/safetensors_model.refuse_pickles)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...graph.errors import NodeError
from ..models.diffusers_model import check_loading_info, read_json
from ..models.safetensors_model import file_state, refuse_pickles

INDEX = "model_index.json"
SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
NOT_YET = {"StableDiffusionXLPipeline": "SDXL", "StableDiffusionXLImg2ImgPipeline": "SDXL",
           "StableDiffusion3Pipeline": "SD3", "FluxPipeline": "Flux", "StableDiffusionInpaintPipeline":
           "the 9-channel SD inpainting UNet"}
# component -> (its weights file or None, the classes samplegraph loads it as)
SD_COMPONENTS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "unet": ("diffusion_pytorch_model.safetensors", ("UNet2DConditionModel",)),
    "text_encoder": ("model.safetensors", ("CLIPTextModel",)),
    "tokenizer": (None, ("CLIPTokenizer", "CLIPTokenizerFast")),
    "vae": ("diffusion_pytorch_model.safetensors", ("AutoencoderKL",)),
    "scheduler": (None, ()),
}


def read_index(root: Path) -> dict[str, Any]:
    """model_index.json of an SD 1.x/2.x pipeline folder (NodeError for other families, named)."""
    if not root.is_dir():
        raise NodeError(f"param 'path': '{root}' is not a directory; give a local diffusers pipeline folder")
    if not (root / INDEX).is_file():
        raise NodeError(f"'{root}' has no {INDEX}, so it is not a diffusers pipeline folder (for a bare UNet2DModel "
                        f"or DiT folder use model.diffusers)")
    index = read_json(root / INDEX)
    kind = str(index.get("_class_name", ""))
    if kind in NOT_YET:
        raise NodeError(f"'{root / INDEX}' is a {kind} ({NOT_YET[kind]}), which model.pipeline does not support "
                        f"yet; supported: {', '.join(SD_PIPELINES)} (Stable Diffusion 1.x/2.x)")
    if kind not in SD_PIPELINES:
        raise NodeError(f"'{root / INDEX}': _class_name {kind or None!r} is not supported; supported: "
                        f"{', '.join(SD_PIPELINES)}")
    return index


def component(root: Path, index: dict[str, Any], name: str) -> Path:
    """The folder of component `name`, checked against the class model_index.json names for it."""
    weights, classes = SD_COMPONENTS[name]
    entry = index.get(name)
    if not (isinstance(entry, list) and len(entry) == 2 and entry[1] is not None):
        raise NodeError(f"'{root / INDEX}' names no '{name}' component; a Stable Diffusion pipeline needs "
                        f"{', '.join(SD_COMPONENTS)}")
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
    """Sizes and mtimes of every config, vocabulary and weights file of the components (the cache key's part)."""
    files = [root / INDEX, *(f for name in SD_COMPONENTS for f in sorted((root / name).glob("*")) if f.is_file())]
    return {str(f): file_state(f) for f in files}


def load_text_encoder(folder: Path, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """A CLIPTextModel from model.safetensors, offline, strict."""
    transformers = import_transformers()
    try:
        module, info = transformers.CLIPTextModel.from_pretrained(
            folder, local_files_only=True, use_safetensors=True, dtype=dtype, output_loading_info=True)
    except Exception as e:  # transformers raises OSError, ValueError, RuntimeError, SafetensorError...
        raise NodeError(f"cannot load the CLIPTextModel in '{folder}': {' '.join(str(e).split())[:400]}") from None
    check_loading_info(info, folder, "model.safetensors")
    return module.eval().requires_grad_(False).to(device)


def load_tokenizer(folder: Path, kind: str, encoder: torch.nn.Module) -> Any:
    """The CLIP tokenizer (offline), checked against the encoder: ids within its vocabulary, context in range."""
    transformers = import_transformers()
    try:
        tokenizer = getattr(transformers, kind).from_pretrained(folder, local_files_only=True)
    except Exception as e:
        raise NodeError(f"cannot load the {kind} in '{folder}': {' '.join(str(e).split())[:400]}") from None
    config = encoder.config
    if len(tokenizer) > config.vocab_size:
        raise NodeError(f"'{folder}' has {len(tokenizer)} tokens but the text encoder's vocab_size is "
                        f"{config.vocab_size}: the tokenizer does not belong to this text_encoder")
    if tokenizer.model_max_length > config.max_position_embeddings:
        raise NodeError(f"'{folder}': model_max_length {tokenizer.model_max_length} exceeds the text encoder's "
                        f"max_position_embeddings {config.max_position_embeddings}")
    if tokenizer.eos_token_id != config.eos_token_id:
        raise NodeError(f"'{folder}': the tokenizer's end token is id {tokenizer.eos_token_id}, the text encoder's "
                        f"eos_token_id is {config.eos_token_id}: the tokenizer does not belong to this text_encoder")
    return tokenizer


def import_transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise NodeError(f"model.pipeline needs the transformers package ({e}); install it with "
                        f"`pip install samplegraph[diffusers]`") from None
    return transformers
