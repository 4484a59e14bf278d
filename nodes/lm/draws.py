"""Token-level random draws from the run's NoiseSource, keyed by (seed, particle, position, slot):
the same seed gives the same text whatever the batch split or particle order (docs/ARCHITECTURE.md,
"Tokens"). Every strategy draws through these functions, each with its own slot."""
from __future__ import annotations

import torch

from ...graph.errors import NodeError
from ..core.noise import NoiseSource

# slots: one per kind of choice made at a position, so no two choices share numbers
SAMPLE, GUMBEL, ACCEPT, DRAFT, RESIDUAL, BONUS = 0, 1, 2, 3, 4, 5


def gumbel(noise: NoiseSource, particle: torch.Tensor, position: torch.Tensor, size: int,
           slot: int = GUMBEL) -> torch.Tensor:
    """(B, size) float64 standard Gumbel keys -log(-log U) of the source's 53-bit uniforms (never 0 or 1,
    so no key is infinite)."""
    return noise.gumbel(particle, position, (size,), slot=slot)  # (B, size)


def uniform(noise: NoiseSource, particle: torch.Tensor, position: torch.Tensor, size: int = 1,
            slot: int = ACCEPT) -> torch.Tensor:
    """(B, size) float64 uniforms in (0, 1), 53-bit, one hash each."""
    return noise.uniform(particle, position, (size,), slot=slot)  # (B, size)


def categorical(noise: NoiseSource, logp: torch.Tensor, particle: torch.Tensor, position: torch.Tensor,
                slot: int = SAMPLE) -> torch.Tensor:
    """(B,) int64 exact draws from the distributions exp(logp) (B, V) by the Gumbel-max trick, in float64."""
    keys = logp.to(torch.float64) + gumbel(noise, particle, position, logp.shape[-1], slot)  # (B, V)
    if bool((~torch.isfinite(logp).any(-1)).any()):
        raise NodeError("a row's next-token distribution gives no token positive probability (all -inf)")
    return keys.argmax(-1)
