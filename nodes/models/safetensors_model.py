"""model.safetensors: a user's class-conditional MLP denoiser from a local safetensors state dict
(never pickle) with its architecture config, under EDM preconditioning (Karras et al. 2022) or as
a rectified-flow velocity network (config "prediction": "flow")."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from ...graph.errors import NodeError

from ..api import Node, node
from .labelled import Labelled
from .networks.conditional import ConditionalNetwork
from .networks.dit import DiT
from .networks.mlp_denoiser import MLPDenoiser, load_mlp
from .sampling import EDMSampling, RectifiedFlowSampling


PICKLES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")  # checkpoint suffixes that unpickle when loaded


def refuse_pickles(folder: Path, where: str, convert_to: str) -> None:
    """A NodeError naming the first pickle checkpoint in `folder`, if any, without opening it."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLES)
    if pickles:
        raise NodeError(f"{where}'{folder / pickles[0]}' is a pickle checkpoint, and samplegraph never unpickles "
                        f"files (loading one can run arbitrary code); convert it to {convert_to} "
                        f"(save_pretrained(..., safe_serialization=True)) where you trust it")


def file_state(path: Path) -> list[int] | None:
    """[size, mtime_ns] of a file, or None when it is missing (run() then reports it)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def mlp_model(net: MLPDenoiser | DiT) -> ConditionalNetwork:
    """The network (an MLP denoiser or a DiT: the same config fields) as a Model (EDM or rectified flow, as its config says) bound to the null class
    (model.condition binds a class)."""
    cfg = net.config
    if cfg.prediction == "flow":  # network time = flow time t in [0, 1]
        return ConditionalNetwork(net, RectifiedFlowSampling(), cfg.classes, "flow")
    return ConditionalNetwork(net, EDMSampling(cfg.sigma_data, cfg.sigma_min, cfg.sigma_max), cfg.classes, "edm")


@node("model.safetensors")
class ModelSafetensors(Node):
    """An EDM-preconditioned (Karras et al. 2022, eq. 7) or flow MLP denoiser loaded from a safetensors file."""

    path: str = Field(min_length=1, description="local .safetensors state dict (see networks/mlp_denoiser.py)")
    config: dict[str, Any] | None = Field(None, description="architecture config (shape, hidden, layers, classes, "
                                          "embedding, sigma_data, ...); None = the file's metadata 'config'")

    def external_state(self) -> Any:
        """The file's size and modification time: a rewritten checkpoint invalidates the cache."""
        return file_state(Path(self.path))

    def input_files(self) -> list[Path]:
        """The file this node reads (a server confines it to its model roots)."""
        return [Path(self.path).expanduser()]

    def run(self) -> Labelled:
        """The model bound to the null class; errors name the file and what mismatched."""
        return mlp_model(load_mlp(Path(self.path), self.config))
