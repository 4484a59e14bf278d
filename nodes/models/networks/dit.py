"""A small class-conditional diffusion transformer (DiT, Peebles & Xie 2023) for images (B, H, W),
its config and its safetensors reader/writer (networks/checkpoint.py).

Patches of `patch` x `patch` pixels become tokens (B, N, D) with fixed 2-D sin-cos position
embeddings; each block is DiT's adaLN-Zero block (scale, shift and a zero-initialised gate from
the time-and-class embedding, before attention and before the MLP); the head is DiT's final
adaLN layer and an unpatchify. Conditioning is the MLP denoiser's (networks/embedding.py: EDM
network time ln(sigma)/4, a null class for CFG).

Any token grid works: an input (B, h, w) with h, w multiples of `patch` depicts the same frame as
the training `shape`, so a token's position is its centre in the units of the training grid
(position interpolation); at the training shape the positions are the integers 0..G-1 exactly.
training/train_dit.py also trains on 16x16 downsamples, which bottleneck sampling uses.

The network is a BlockNetwork (networks/blocks.py): `embed` -> `blocks` -> `head`, forward is
run_blocks. Each block also evaluates a subset of its tokens against cached keys and values of
the others (`DiTBlock.partial`), which region-adaptive sampling needs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .blocks import run_blocks
from .checkpoint import load_network, save_network
from .embedding import add_time_class_layers, class_embedding_row, time_class_embedding

EXAMPLE = '{"architecture": "dit", "shape": [28, 28], "patch": 4, "width": 96, "depth": 4, "heads": 4, "classes": 10}'


class DiTConfig(BaseModel):
    """Architecture and preconditioning of a DiT (plain JSON data)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    architecture: str = Field("dit", pattern="^dit$")
    prediction: Literal["edm"] = Field("edm", description="EDM's F under EDM preconditioning")
    shape: list[int] = Field([28, 28], min_length=2, max_length=2, description="training image shape (H, W)")
    patch: int = Field(4, ge=1)
    width: int = Field(96, ge=8, description="token width D (also the embedding width)")
    depth: int = Field(4, ge=1, description="adaLN-Zero blocks")
    heads: int = Field(4, ge=1)
    mlp_ratio: int = Field(2, ge=1, description="MLP hidden width / D")
    classes: int = Field(0, ge=0, description="number of classes; the null class is index `classes`")
    sigma_data: float = Field(0.5, gt=0)
    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(80.0, gt=0)

    @model_validator(mode="after")
    def _divisible(self) -> DiTConfig:
        if self.width % self.heads or self.width % 4:
            raise ValueError(f"width {self.width} must be a multiple of 4 and of heads {self.heads}")
        if any(s % self.patch for s in self.shape):
            raise ValueError(f"shape {self.shape} must be multiples of patch {self.patch}")
        return self

    @property
    def grid(self) -> tuple[int, int]:
        """The training token grid (H / patch, W / patch)."""
        return self.shape[0] // self.patch, self.shape[1] // self.patch


def sincos_1d(width: int, pos: torch.Tensor) -> torch.Tensor:
    """(N, width) sin-cos features of positions pos (N,) (Vaswani et al. 2017; MAE's 2-D table is two of these)."""
    omega = 1.0 / 10000 ** (torch.arange(width // 2, dtype=torch.float64) / (width / 2))  # (width/2,)
    angles = pos.to(torch.float64)[:, None] * omega  # (N, width/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)  # (N, width)


def grid_positions(tokens: int, reference: int) -> torch.Tensor:
    """(tokens,) token centres in units of a `reference`-token grid over the same frame: exactly 0..n-1 at n = ref."""
    return (torch.arange(tokens, dtype=torch.float64) + 0.5) * (reference / tokens) - 0.5


def sincos_2d(width: int, grid: tuple[int, int], reference: tuple[int, int]) -> torch.Tensor:
    """(gh * gw, width) float32 position embeddings of a gh x gw token grid, row-major (DiT's fixed table)."""
    ys, xs = (grid_positions(g, r) for g, r in zip(grid, reference))
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")  # (gh, gw) each
    table = torch.cat([sincos_1d(width // 2, yy.reshape(-1)), sincos_1d(width // 2, xx.reshape(-1))], dim=1)
    return table.float()  # (N, width)


def modulate(z: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: z (B, N, D) scaled and shifted per row by shift, scale (B, D)."""
    return z * (1 + scale[:, None]) + shift[:, None]  # (B, N, D)


class DiTBlock(torch.nn.Module):
    """adaLN-Zero transformer block (Peebles & Xie 2023, Fig. 3): gates start at zero, so a fresh block is the identity."""

    def __init__(self, width: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1 = torch.nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.proj = torch.nn.Linear(width, width)
        self.norm2 = torch.nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, mlp_ratio * width), torch.nn.GELU(approximate="tanh"),
                                       torch.nn.Linear(mlp_ratio * width, width))
        self.ada = torch.nn.Sequential(torch.nn.SiLU(), torch.nn.Linear(width, 6 * width))
        torch.nn.init.zeros_(self.ada[1].weight)
        torch.nn.init.zeros_(self.ada[1].bias)

    def modulation(self, e: torch.Tensor) -> list[torch.Tensor]:
        """shift, scale, gate for attention then for the MLP: six (B, D) from e (B, D)."""
        return list(self.ada(e).chunk(6, dim=1))

    def keys_values(self, h: torch.Tensor, mod: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """q, k, v (B, heads, N, D / heads) of tokens h (B, N, D)."""
        b, n, d = h.shape
        qkv = self.qkv(modulate(self.norm1(h), mod[0], mod[1]))  # (B, N, 3D)
        return qkv.reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)

    def finish(self, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mod: list[torch.Tensor]) -> torch.Tensor:
        """The block's output (B, n, D) for tokens h (B, n, D) with queries q over keys/values k, v (all tokens)."""
        b, n, d = h.shape
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # (B, heads, n, D / heads)
        h = h + mod[2][:, None] * self.proj(a.transpose(1, 2).reshape(b, n, d))  # (B, n, D)
        return h + mod[5][:, None] * self.mlp(modulate(self.norm2(h), mod[3], mod[4]))  # (B, n, D)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, D) -> (B, N, D) under conditioning e (B, D)."""
        mod = self.modulation(e)
        q, k, v = self.keys_values(h, mod)
        return self.finish(h, q, k, v, mod)

    def partial(self, h: torch.Tensor, e: torch.Tensor, index: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The output (B, n, D) of the tokens h (B, n, D) at positions index (B, n) of each row, attending to
        all N tokens: their fresh keys/values written into copies of k_cache, v_cache (B, heads, N, D / heads),
        the other tokens' taken from the caches (RAS's attention cache, Liu et al. 2025).
        Returns (output, keys, values) with the updated caches."""
        mod = self.modulation(e)
        q, k_new, v_new = self.keys_values(h, mod)  # (B, heads, n, D / heads)
        at = index[:, None, :, None].expand_as(k_new)  # (B, heads, n, D / heads)
        k, v = k_cache.scatter(2, at, k_new), v_cache.scatter(2, at, v_new)  # (B, heads, N, D / heads)
        return self.finish(h, q, k, v, mod), k, v


class DiT(torch.nn.Module):
    """F(c_in x, c_noise, class) of EDM (Karras et al. 2022, eq. 7) as a DiT (Peebles & Xie 2023) with adaLN-Zero."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        d, p = config.width, config.patch
        add_time_class_layers(self, d, config.classes)
        self.patchify = torch.nn.Linear(p * p, d)
        self.blocks = torch.nn.ModuleList(DiTBlock(d, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.final_norm = torch.nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = torch.nn.Sequential(torch.nn.SiLU(), torch.nn.Linear(d, 2 * d))
        self.out = torch.nn.Linear(d, p * p)
        for layer in (self.final_ada[1], self.out):
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)

    def token_grid(self, x: torch.Tensor) -> tuple[int, int]:
        """(gh, gw) tokens of an input x (B, h, w); ValueError unless h, w are multiples of the patch."""
        h, w = x.shape[-2:]
        p = self.config.patch
        if x.dim() != 3 or h % p or w % p:
            raise ValueError(f"the DiT takes images (B, H, W) with H, W multiples of its patch {p}; got {tuple(x.shape)}")
        return h // p, w // p

    def positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """(N, D) position embeddings of a token grid (interpolated to the training grid's frame)."""
        return sincos_2d(self.config.width, grid, self.config.grid)

    def class_embedding(self, label: int | None) -> torch.Tensor:
        """The embedding (D,) added for `label` (None: the null class); `forward` also takes (B, D) of these."""
        return class_embedding_row(self, label)  # (D,)

    def embed(self, x: torch.Tensor, t: torch.Tensor,
              label: int | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens h (B, N, D) and conditioning e (B, D) of the scaled input x (B, H, W) at network time t (B,)."""
        b, p = x.shape[0], self.config.patch
        gh, gw = self.token_grid(x)
        patches = x.reshape(b, gh, p, gw, p).permute(0, 1, 3, 2, 4).reshape(b, gh * gw, p * p)  # (B, N, p*p)
        h = self.patchify(patches) + self.positions((gh, gw)).to(x)  # (B, N, D)
        return h, time_class_embedding(self, t, label, b, x.dtype)  # (B, N, D), (B, D)

    def head(self, h: torch.Tensor, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """F (B, H, W) from the last tokens h (B, N, D): final adaLN, linear to patches, unpatchify."""
        gh, gw = self.token_grid(x)
        return self.unpatchify(self.head_tokens(h, e), gh, gw).reshape(x.shape)  # (B, H, W)

    def head_tokens(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """(B, n, p*p) output patches of tokens h (B, n, D): the head applies token by token."""
        shift, scale = self.final_ada(e).chunk(2, dim=1)  # (B, D) each
        return self.out(modulate(self.final_norm(h), shift, scale))  # (B, n, p*p)

    def unpatchify(self, patches: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
        """Images (B, gh*p, gw*p) from patches (B, gh*gw, p*p), row-major."""
        b, p = patches.shape[0], self.config.patch
        return patches.reshape(b, gh, gw, p, p).permute(0, 1, 3, 2, 4).reshape(b, gh * p, gw * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: int | torch.Tensor | None = None,
                skip: frozenset[int] = frozenset()) -> torch.Tensor:
        """F (B, H, W) of the scaled input x (B, H, W) at network time t (B,) for `label` (embed -> blocks -> head)."""
        return run_blocks(self, x, t, label, skip)


def resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """Images (B, side, side) from x (B, H, W): bilinear, antialiased when shrinking. The DiT's low-resolution
    view of a frame: training/train_dit.py trains on it and bottleneck sampling moves between resolutions with it."""
    if x.shape[-2:] == (side, side):
        return x
    return torch.nn.functional.interpolate(x[:, None], size=(side, side), mode="bilinear",
                                           antialias=side < max(x.shape[-2:]), align_corners=False)[:, 0]


def save_dit(net: DiT, path: str | Path, extra: dict[str, Any] | None = None,
             dtype: torch.dtype = torch.float32) -> Path:
    """Write the state dict (in `dtype`) with the config (and `extra` notes) as JSON metadata."""
    return save_network(net, net.config, path, extra, dtype)


def load_dit(path: str | Path, config: dict[str, Any] | None = None) -> DiT:
    """A DiT (eval mode) from a safetensors file; `config` overrides the file's own (NodeErrors name the file)."""
    return load_network(path, config, DiTConfig, DiT, EXAMPLE)
