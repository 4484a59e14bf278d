"""Sample-based distances shared by the metric nodes (pure functions of tensors)."""
from __future__ import annotations

import math

import torch

CHUNK_ELEMENTS = 1 << 23  # projected values held at once (64 MiB of float64) on large inputs


def wasserstein2_sq_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact squared W2 between uniform empirical measures, row by row: integral of (Fa^-1 - Fb^-1)^2.

    a (P, N) and b (P, M) need not have equal counts: both quantile functions are step
    functions, constant between the merged breakpoints i/N and j/M, so the integral is a
    finite sum. Breakpoints are compared as integers (i*M vs j*N over N*M), so ties are exact."""
    n, m = a.shape[1], b.shape[1]
    a, b = a.sort(dim=1).values, b.sort(dim=1).values  # (P, N), (P, M)
    i = torch.arange(1, n + 1, device=a.device) * m  # (N,) int64: i/N in units of 1/(N*M)
    j = torch.arange(1, m + 1, device=a.device) * n  # (M,)
    ends = torch.unique(torch.cat([i, j]))  # (K,) sorted right ends of the constant pieces
    widths = torch.diff(ends, prepend=ends.new_zeros(1)).to(a.dtype) / (n * m)  # (K,)
    ia = (ends + m - 1) // m - 1  # (K,) index of Fa^-1 on each piece
    ib = (ends + n - 1) // n - 1  # (K,)
    return ((a[:, ia] - b[:, ib]) ** 2 * widths).sum(dim=1)  # (P,)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int, generator: torch.Generator) -> float:
    """Sliced 2-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015) between point sets.

    a (N, D) and b (M, D); SW2^2 = mean over `projections` random unit directions theta of
    W2^2(theta . a, theta . b). Directions come from `generator` (a CPU generator), so the
    value is reproducible; the computation is float64 on a's device."""
    a, b = a.to(torch.float64), b.to(device=a.device, dtype=torch.float64)  # (N, D), (M, D)
    theta = torch.randn(projections, a.shape[1], generator=generator, dtype=torch.float64)  # (P, D)
    theta = (theta / theta.norm(dim=1, keepdim=True)).to(a.device)  # (P, D) unit rows
    per_chunk = max(1, CHUNK_ELEMENTS // (a.shape[0] + b.shape[0]))
    total = 0.0
    for t in theta.split(per_chunk):  # (p, D) each
        total += float(wasserstein2_sq_1d(t @ a.T, t @ b.T).sum())  # (p, N), (p, M) -> (p,)
    return math.sqrt(total / projections)
