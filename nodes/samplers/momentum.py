"""Heavy-ball momentum shared by sampler.hb and sampler.ghvb (Wizadwongsa et al. 2023, arXiv 2307.11118).

Both work on the diffusion ODE in DDIM form, dx/dsigma = eps (x = x0 + sigma eps, this package's
space), with steps x_{n+1} = x_n + (sigma_{n+1} - sigma_n) * (a combination of slopes)."""
from __future__ import annotations

import torch

from ..core.state import bcast


def heavy_ball(velocity: torch.Tensor, slope: torch.Tensor, beta: float, fresh: torch.Tensor) -> torch.Tensor:
    """Polyak's velocity v = (1 - beta) v + beta z (B, ...), eq. 10 of the paper; rows with `fresh` (B,)
    start it at v = z (the authors' code: the first velocity is the first slope). beta = 1 is z itself."""
    mixed = (1 - beta) * velocity + beta * slope  # (B, ...); exactly slope when beta = 1 and velocity is finite
    return torch.where(bcast(fresh, slope), slope, mixed)


def ghvb_weights(order: int, beta: float) -> tuple[float, ...]:
    """Weights of v_n, v_n-1, ... in GHVB's step direction of order `order` (1-4) and momentum beta
    (the authors' AdamBmixer / beta); at beta = 1 they are the Adams-Bashforth weights of sampler.ipndm."""
    rows = {1: ((0, 1),), 2: ((2, 1), (-2, 1)), 3: ((18, 5), (-24, 8), (6, -1)),
            4: ((46, 9), (-78, 19), (42, -5), (-10, 1))}  # (c, s): weight (c + s beta) / (den beta)
    den = {1: 1, 2: 2, 3: 12, 4: 24}[order]
    return tuple((c + s * beta) / den / beta for c, s in rows[order])
