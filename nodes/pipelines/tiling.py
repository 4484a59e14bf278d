"""Tiled and sliced VAE calls (vae.encode / vae.decode's `tiling` and `slicing` options): the image or latent is
cut into overlapping square tiles, each tile goes through the VAE alone, and neighbouring tiles are cross-faded
over the overlap, so memory grows with the tile, not the image; slicing runs the batch one row at a time.

The algorithm is the one of diffusers' AutoencoderKL (enable_tiling: tiled_decode / _tiled_encode;
enable_slicing), written here as one function for both directions so that the tile size and overlap are per
call (diffusers keeps them on the shared module): with input tiles of `tile` and output tiles of `tile_out`,
tiles start every int(tile * (1 - overlap)), each tile is blended with its (already blended) upper and left
neighbours over int(tile_out * overlap) rows / columns with linear weights y / extent, then cropped to
tile_out - extent and concatenated. The raw VAE outputs are blended (before the [0, 1] clamp)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Tiling:
    """How a VAE call is cut: spatial tiles (side `tile` in pixels, None = the VAE's sample_size, as diffusers)
    with a fractional `overlap`, and/or one batch row at a time (`slicing`)."""

    tiles: bool = False
    tile: int | None = None  # pixels
    overlap: float = 0.25  # diffusers' tile_overlap_factor
    slicing: bool = False


def sliced(fn: Fn, x: torch.Tensor, slicing: bool) -> torch.Tensor:
    """fn(x), or fn over each row of x (B, ...) joined (diffusers' enable_slicing)."""
    if not slicing or x.shape[0] <= 1:
        return fn(x)
    return torch.cat([fn(row) for row in x.split(1)])


def tiled(fn: Fn, x: torch.Tensor, tile: int, tile_out: int, overlap: float) -> torch.Tensor:
    """fn over overlapping tiles of x (B, C, H, W): tiles of side `tile` whose outputs have side `tile_out`;
    fn(x) itself when x fits in one tile."""
    if x.shape[2] <= tile and x.shape[3] <= tile:
        return fn(x)
    stride = int(tile * (1 - overlap))
    extent = int(tile_out * overlap)
    keep = tile_out - extent
    rows: list[list[torch.Tensor]] = []
    for i in range(0, x.shape[2], stride):
        row: list[torch.Tensor] = []
        for j in range(0, x.shape[3], stride):
            out = fn(x[:, :, i:i + tile, j:j + tile])  # (B, C', <= tile_out, <= tile_out)
            if rows:
                out = cross_fade(rows[-1][len(row)], out, extent, dim=2)
            if row:
                out = cross_fade(row[-1], out, extent, dim=3)
            row.append(out)
        rows.append(row)
    return torch.cat([torch.cat([t[:, :, :keep, :keep] for t in row], dim=3) for row in rows], dim=2)


def cross_fade(before: torch.Tensor, tile: torch.Tensor, extent: int, dim: int) -> torch.Tensor:
    """`tile` with its first n = min(sizes, extent) slices along `dim` blended with the last `extent` slices of
    the neighbour `before`: before * (1 - y / extent) + tile * (y / extent), y = 0..n-1."""
    n = min(before.shape[dim], tile.shape[dim], extent)
    if n == 0:
        return tile
    y = torch.arange(n, dtype=torch.float64, device=tile.device) / extent  # (n,)
    shape = [1] * tile.ndim
    shape[dim] = n
    w_tile, w_before = y.to(tile.dtype).view(shape), (1 - y).to(tile.dtype).view(shape)
    head = before.narrow(dim, before.shape[dim] - extent, n) * w_before + tile.narrow(dim, 0, n) * w_tile
    return torch.cat([head, tile.narrow(dim, n, tile.shape[dim] - n)], dim=dim)
