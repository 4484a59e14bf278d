"""A small class-conditional MLP denoiser for flattened images (EDM's F network, Karras et al. 2022),
its config, and its safetensors reader/writer (networks/checkpoint.py) that the training script
and loader nodes share. Its residual blocks can be skipped (`skipping`), which makes the weak model
of skip-layer guidance."""
from __future__ import annotations

import math
from pathlib import Path
from collections.abc import Iterable
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from .blocks import run_blocks
from .checkpoint import load_network, save_network
from .embedding import add_time_class_layers, class_embedding_row, time_class_embedding

EXAMPLE = '{"shape": [64], "hidden": 256, "layers": 3, "classes": 10}'


class MLPConfig(BaseModel):
    """Architecture and preconditioning of an MLPDenoiser (plain JSON data)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: str = Field("mlp_denoiser", pattern="^mlp_denoiser$")
    prediction: Literal["edm", "flow"] = Field("edm", description="EDM's F under EDM preconditioning, or the "
                                               "rectified-flow velocity eps - x0 of x_t at flow time t")
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
        add_time_class_layers(self, e, config.classes)
        self.inp = torch.nn.Linear(config.dim, w)
        self.blocks = torch.nn.ModuleList(Block(w, e) for _ in range(config.layers))
        self.out = torch.nn.Sequential(torch.nn.LayerNorm(w), torch.nn.SiLU(), torch.nn.Linear(w, config.dim))

    @property
    def block_count(self) -> int:
        """Residual blocks that `skipping` may skip (indices 0..block_count-1)."""
        return len(self.blocks)

    def skipping(self, blocks: Iterable[int]) -> SkippedBlocks:
        """This network (shared weights) with residual blocks `blocks` replaced by the identity."""
        return SkippedBlocks(self, frozenset(blocks))

    def class_embedding(self, label: int | None) -> torch.Tensor:
        """The embedding (E,) added for `label` (None: the null class); `forward` also takes (B, E) of these."""
        return class_embedding_row(self, label)  # (E,)

    def embed(self, x: torch.Tensor, t: torch.Tensor,
              label: int | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden state h (B, W) and embedding e (B, E) of the scaled input x (B, *shape) at network time t (B,)
        for `label` (None = null class; an int tensor (B,) of labels or a float tensor (B, E) of class
        embeddings)."""
        b = x.shape[0]
        e = time_class_embedding(self, t, label, b, x.dtype)  # (B, E)
        return self.inp(x.reshape(b, -1)), e  # (B, W), (B, E)

    def head(self, h: torch.Tensor, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """F (B, *shape) from the last hidden state h (B, W)."""
        return self.out(h).reshape(x.shape)  # (B, *shape)

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: int | torch.Tensor | None = None,
                skip: frozenset[int] = frozenset()) -> torch.Tensor:
        """F (B, *shape) of the scaled input x (B, *shape) at network time t (B,) for `label`, with the residual
        blocks in `skip` left out (networks/blocks.py: embed -> blocks -> head)."""
        return run_blocks(self, x, t, label, skip)


class SkippedBlocks(torch.nn.Module):
    """An MLPDenoiser with some residual blocks skipped, as in skip-layer guidance (Hyung et al. 2024)."""

    def __init__(self, net: MLPDenoiser, skip: frozenset[int]):
        super().__init__()
        self.net, self.skip = net, skip

    @property
    def config(self) -> MLPConfig:
        return self.net.config

    @property
    def block_count(self) -> int:
        return self.net.block_count

    def skipping(self, blocks: Iterable[int]) -> SkippedBlocks:
        return SkippedBlocks(self.net, self.skip | frozenset(blocks))

    def class_embedding(self, label: int | None) -> torch.Tensor:
        return self.net.class_embedding(label)  # (E,)

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: int | torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, t, label, skip=self.skip)  # (B, *shape)


def save_mlp(net: MLPDenoiser, path: str | Path, extra: dict[str, Any] | None = None,
             dtype: torch.dtype = torch.float32) -> Path:
    """Write the state dict (in `dtype`) with the config (and `extra` notes) as JSON metadata."""
    return save_network(net, net.config, path, extra, dtype)


def load_mlp(path: str | Path, config: dict[str, Any] | None = None) -> MLPDenoiser:
    """An MLPDenoiser (eval mode) from a safetensors file; `config` overrides the file's own.

    Every failure is a NodeError naming the file and what is wrong (networks/checkpoint.py)."""
    return load_network(path, config, MLPConfig, MLPDenoiser, EXAMPLE)
