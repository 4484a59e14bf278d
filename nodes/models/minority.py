"""The minority score of Um et al. (2024), eq. (6): how badly the unconditional denoiser reconstructs a
clean image from one noise level, l(x0) = E_eps |x0 - D(x0 + sigma eps, sigma)|^2 (the paper's LPIPS
replaced by the squared error). Rare images reconstruct worse; quantised into levels it labels the
training set of the minority classifier (training/train_digits_classifier.py --kind minority)."""
from __future__ import annotations

import torch

from ..core.denoiser import Denoiser

SIGMA = 1.0  # the fixed perturbation level in EDM space x = x0 + sigma eps
DRAWS = 4  # fixed noise draws averaged per image
SEED = 0
LEVELS = 5


@torch.no_grad()
def minority_score(denoise: Denoiser, x0: torch.Tensor, sigma: float = SIGMA, draws: int = DRAWS,
                   seed: int = SEED) -> torch.Tensor:
    """l(x0) (B,) of clean images x0 (B, ...): mean over `draws` fixed eps (the same for every image)."""
    eps = torch.randn((draws, *x0.shape[1:]), generator=torch.Generator().manual_seed(seed))  # (K, ...)
    s = torch.full((x0.shape[0],), sigma, dtype=x0.dtype, device=x0.device)  # (B,)
    total = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)  # (B,)
    for e in eps.to(x0):
        total += (x0 - denoise(x0 + sigma * e, s)).flatten(1).square().sum(1)  # (B,)
    return total / draws


def level_edges(scores: torch.Tensor, levels: int = LEVELS) -> torch.Tensor:
    """The levels - 1 inner quantiles (levels - 1,) of scores (N,): equal-count bins."""
    return torch.quantile(scores.double(), torch.arange(1, levels, dtype=torch.float64) / levels).to(scores)


def minority_levels(scores: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Levels (N,) in 0..len(edges): 0 the most common (lowest score), the last the rarest."""
    return torch.bucketize(scores, edges, right=True)
