"""model.mdm: a masked (absorbing-state) diffusion language model over characters (MDLM, Sahoo et al.
2024): the bidirectional version of the character transformer of nodes/lm/char_lm.py, trained by
training/train_mdm.py on the repo's grammar (nodes/lm/grammar/). Time-agnostic: the network sees no
t (Zheng et al. 2024 show a masked model's clean-token posterior needs none; the time argument is
ignored).

Vocabulary (the char LM's convention, id 1 is MASK instead of BOS): id 0 = EOS (pads a text to L),
id 1 = MASK (b"", never predicted), ids 2.. = the grammar's bytes. The network was trained on whole
sequences of L = config.context positions (a text, then EOS to L); a shorter sequence of n tokens is
read as a text that ends within them: the network sees EOS at positions n..L-1 (so an infill template
shorter than L conditions on the text ending where the template ends).

Files, safetensors only (never pickles): the shipped nodes/discrete/weights/mdm.safetensors holds its
config in the metadata (networks/checkpoint.py); a user's folder holds config.json beside
model.safetensors (`save_mdm_folder` writes one)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..lm.char_lm import EOS, CharLMConfig, CharTransformer
from ..lm.vocab import Vocabulary
from ..models.networks.checkpoint import load_network, save_network
from ..models.safetensors_model import file_state, refuse_pickles
from .denoiser import DiscreteDenoiser, carry_over

WEIGHTS = Path(__file__).resolve().parent / "weights" / "mdm.safetensors"
MASK = 1  # the char LM's BOS id: a masked model never needs a BOS
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
EXAMPLE = ('{"denoiser": "masked", "alphabet": "0123456789-", "d_model": 64, "layers": 3, "heads": 4, '
           '"context": 65}')


class MDMConfig(CharLMConfig):
    """The character transformer's config; `context` is the sequence length L. `denoiser` is required,
    so a causal char LM's file is never read as a masked diffusion model."""

    denoiser: Literal["masked"]


def build_mdm(config: MDMConfig) -> CharTransformer:
    """The bidirectional character transformer of a config."""
    return CharTransformer(config, causal=False)


class MaskedDiffusionLM(DiscreteDenoiser):
    """A bidirectional character transformer as a time-agnostic masked DiscreteDenoiser (carry-over output)."""

    def __init__(self, net: CharTransformer):
        self.net = net
        self.config = net.config
        chars = tuple(c.encode("ascii") for c in self.config.alphabet)
        self.vocab = Vocabulary(tokens=(b"", b"") + chars, eos=frozenset({EOS}))
        self.mask_id = MASK
        self.length = self.config.context

    def __call__(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B, L, V) float64 log p(x0 | x_t) for tokens (B, L); t (B,) is ignored (time-agnostic)."""
        self.check_tokens(tokens, "model.mdm")
        net = self.net if next(self.net.parameters()).device == tokens.device else self.net.to(tokens.device)
        b, n = tokens.shape
        full = torch.cat([tokens, tokens.new_full((b, self.length - n), EOS)], 1)  # (B, L): EOS after a short row
        pos = torch.arange(self.length, device=tokens.device).expand_as(full)  # (B, L)
        with torch.no_grad():
            logits = net(full, pos)[:, :n]  # (B, n, V)
        return carry_over(logits.to(torch.float64), tokens, MASK)


def load_mdm(path: str | Path = WEIGHTS) -> MaskedDiffusionLM:
    """The model of a safetensors file with its config in the metadata (e.g. the shipped weights)."""
    return MaskedDiffusionLM(load_network(path, None, MDMConfig, build_mdm, EXAMPLE))


def load_mdm_folder(folder: str | Path) -> MaskedDiffusionLM:
    """The model of a user's folder: config.json (MDMConfig fields) and model.safetensors (a state dict of
    the bidirectional character transformer); NodeError naming the file and the problem otherwise."""
    root = Path(folder).expanduser()
    where = "model.mdm: "
    if not root.is_dir():
        raise NodeError(f"{where}'{root}' is not a folder; give a folder holding {CONFIG_FILE} and {WEIGHTS_FILE}")
    weights, config = root / WEIGHTS_FILE, root / CONFIG_FILE
    if not weights.is_file():
        refuse_pickles(root, where, WEIGHTS_FILE)
        raise NodeError(f"{where}'{weights}' does not exist; save the state dict as safetensors under that name")
    if not config.is_file():
        raise NodeError(f"{where}'{config}' does not exist; write the architecture there (e.g. {EXAMPLE})")
    try:
        raw = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NodeError(f"{where}'{config}' is not a readable JSON file ({e})") from None
    if not isinstance(raw, dict):
        raise NodeError(f"{where}'{config}' must hold a JSON object (e.g. {EXAMPLE})")
    return MaskedDiffusionLM(load_network(weights, raw, MDMConfig, build_mdm, EXAMPLE))


def save_mdm_folder(net: CharTransformer, folder: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write a folder that `load_mdm_folder` (model.mdm's `path`) reads: config.json + model.safetensors."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    (root / CONFIG_FILE).write_text(net.config.model_dump_json(indent=1) + "\n")
    save_network(net, net.config, root / WEIGHTS_FILE, dtype=dtype)
    return root


@node("model.mdm", version=1)
class ModelMDM(Node):
    """A masked diffusion LM over characters (Sahoo et al. 2024, MDLM; time-agnostic, Zheng et al. 2024)."""

    path: str | None = Field(None, description="a local folder with config.json and model.safetensors (safetensors "
                             "only); None = the shipped nodes/discrete/weights/mdm.safetensors")

    def input_files(self) -> list[Path]:
        """The user's model folder (a server confines it to its model roots); the shipped weights are none."""
        return [Path(self.path).expanduser()] if self.path is not None else []

    def external_state(self) -> Any:
        """The weights' (and config's) size and mtime: retrained or replaced files invalidate the cache."""
        if self.path is None:
            return file_state(WEIGHTS)
        root = Path(self.path).expanduser()
        return [file_state(root / CONFIG_FILE), file_state(root / WEIGHTS_FILE)]

    def run(self) -> DiscreteDenoiser:
        return load_mdm() if self.path is None else load_mdm_folder(self.path)
