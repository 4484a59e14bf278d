"""Small math shared by the solvers (k-diffusion's helpers, typed)."""
from __future__ import annotations

import torch

from ..core.state import bcast


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative dx/dsigma = (x - D(x, sigma)) / sigma, Karras et al. (2022) eq. 4."""
    return (x - denoised) / bcast(sigma, x)  # (B, ...)
