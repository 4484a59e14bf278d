"""BlockNetwork: the three-stage view of a network that block-level methods share (step caching of
blocks between steps, region-adaptive and token-subset evaluation, skip-layer models).

A network is `embed` (input and conditioning -> hidden state h and conditioning vector e), a
sequence of `blocks` (each `block(h, e) -> h`, same shape in and out), and `head` (h, e -> the
network output of x's shape). `forward(x, t, label)` must equal `run_blocks` over all blocks, so a
method that runs the stages itself (and reuses a block's cached output) is exact when it reuses
nothing."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class BlockNetwork(Protocol):
    """A network exposed as embed -> blocks -> head (MLPDenoiser: h (B, W); a DiT: tokens (B, N, D))."""

    blocks: torch.nn.ModuleList

    def embed(self, x: torch.Tensor, t: torch.Tensor,
              label: int | torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden state h (B, ...) and conditioning e (B, E) of the scaled input x (B, *shape) at network time t (B,)."""
        ...

    def head(self, h: torch.Tensor, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The network output (B, *shape) from the last hidden state h; x gives the output shape."""
        ...


def run_blocks(net: BlockNetwork, x: torch.Tensor, t: torch.Tensor, label: int | torch.Tensor | None = None,
               skip: frozenset[int] = frozenset()) -> torch.Tensor:
    """net's output (B, *shape): embed, every block not in `skip` in order, head."""
    h, e = net.embed(x, t, label)
    for i, block in enumerate(net.blocks):
        h = h if i in skip else block(h, e)
    return net.head(h, e, x)
