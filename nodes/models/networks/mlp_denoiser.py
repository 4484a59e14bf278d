"""A small class-conditional MLP denoiser for flattened images (EDM's F network, Karras et al. 2022),
its config, and the safetensors reader/writer that the training script and loader nodes share.

The config is plain JSON data stored in the safetensors metadata under "config", so a file is
self-describing; a user's own file may instead come with the config given separately."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ....graph.errors import NodeError


class MLPConfig(BaseModel):
    """Architecture and preconditioning of an MLPDenoiser (plain JSON data)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: str = Field("mlp_denoiser", pattern="^mlp_denoiser$")
    shape: list[int] = Field([64], min_length=1, description="sample shape, e.g. [8, 8]; flattened inside")
    hidden: int = Field(256, ge=8)
    layers: int = Field(3, ge=1, description="residual blocks")
    classes: int = Field(0, ge=0, description="number of classes; the null class is index `classes`")
    embedding: int = Field(64, ge=4, description="width of the time and class embeddings")
    sigma_data: float = Field(0.5, gt=0)
    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(80.0, gt=0)

    @property
    def dim(self) -> int:
        return math.prod(self.shape)


class Block(torch.nn.Module):
    """Residual MLP block modulated by the embedding (scale and shift, as FiLM)."""

    def __init__(self, width: int, emb: int):
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)
        self.film = torch.nn.Linear(emb, 2 * width)
        self.fc1 = torch.nn.Linear(width, width)
        self.fc2 = torch.nn.Linear(width, width)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(e).chunk(2, dim=1)  # (B, W) each
        z = self.norm(h) * (1 + scale) + shift  # (B, W)
        return h + self.fc2(torch.nn.functional.silu(self.fc1(torch.nn.functional.silu(z))))  # (B, W)


class MLPDenoiser(torch.nn.Module):
    """F(c_in x, c_noise, class) of EDM (Karras et al. 2022, eq. 7) as a residual MLP with FiLM conditioning."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        w, e = config.hidden, config.embedding
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(100.0), e // 2)), persistent=False)
        self.time = torch.nn.Sequential(torch.nn.Linear(e, e), torch.nn.SiLU(), torch.nn.Linear(e, e))
        self.label = torch.nn.Embedding(config.classes + 1, e) if config.classes else None
        self.inp = torch.nn.Linear(config.dim, w)
        self.blocks = torch.nn.ModuleList(Block(w, e) for _ in range(config.layers))
        self.out = torch.nn.Sequential(torch.nn.LayerNorm(w), torch.nn.SiLU(), torch.nn.Linear(w, config.dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: int | torch.Tensor | None = None) -> torch.Tensor:
        """F (B, *shape) of the scaled input x (B, *shape) at network time t (B,) for `label` (None = null class)."""
        b = x.shape[0]
        angles = t.to(x.dtype)[:, None] * self.freqs.to(x.dtype)  # (B, E/2)
        e = self.time(torch.cat([angles.cos(), angles.sin()], dim=1))  # (B, E)
        if self.label is not None:
            null = self.config.classes
            labels = torch.full((b,), null if label is None else label, device=x.device) \
                if label is None or isinstance(label, int) else label.to(x.device)  # (B,)
            e = e + self.label(labels.long()).to(x.dtype)  # (B, E)
        h = self.inp(x.reshape(b, -1))  # (B, W)
        for block in self.blocks:
            h = block(h, e)  # (B, W)
        return self.out(h).reshape(x.shape)  # (B, *shape)


def save_mlp(net: MLPDenoiser, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the state dict (float32) with the config (and `extra` notes) as JSON metadata."""
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in net.state_dict().items()}
    meta = {"config": net.config.model_dump_json()}
    meta.update({k: json.dumps(v) for k, v in (extra or {}).items()})
    save_file(tensors, str(path), metadata=meta)
    return Path(path)


def load_mlp(path: str | Path, config: dict[str, Any] | None = None) -> MLPDenoiser:
    """An MLPDenoiser (eval mode) from a safetensors file; `config` overrides the file's own.

    Every failure is a NodeError naming the file and what is wrong (missing, unreadable, bad
    config, missing/unexpected keys, mismatched shapes)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise NodeError(f"model file '{p}' does not exist; give the path of a .safetensors state dict")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise NodeError(f"model file '{p}' is not a readable safetensors file ({e})") from None
    raw = config if config is not None else _config_of(meta, p)
    try:
        cfg = MLPConfig.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise NodeError(f"bad architecture config for '{p}': {problems}") from None
    net = MLPDenoiser(cfg)
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k} {tuple(tensors[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"missing keys {missing[:5]}" if missing else "", f"unexpected keys {unexpected[:5]}" if unexpected
                 else "", f"wrong shapes {wrong[:5]}" if wrong else ""]
        raise NodeError(f"model file '{p}' does not match the config {cfg.model_dump()}: "
                        f"{'; '.join(x for x in parts if x)}")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return net.eval().requires_grad_(False)


def _config_of(meta: dict[str, str], path: Path) -> dict[str, Any]:
    """The JSON config in the file's metadata (NodeError when absent or not JSON)."""
    if "config" not in meta:
        raise NodeError(f"model file '{path}' has no 'config' in its metadata; pass the architecture 'config' "
                        f"parameter (e.g. {{\"shape\": [64], \"hidden\": 256, \"layers\": 3, \"classes\": 10}})")
    try:
        return json.loads(meta["config"])
    except json.JSONDecodeError as e:
        raise NodeError(f"model file '{path}': its metadata 'config' is not JSON ({e})") from None
