"""Exact distributions of model.exact_discrete by enumeration, and distances of samples to them:
the ground truth every discrete sampler, posterior sampler and search strategy is tested against."""
from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable

import torch

from .exact_model import ExactDiscrete


def all_sequences(model: ExactDiscrete) -> torch.Tensor:
    """(N, L) int64: every clean sequence (C^L of them, C = K + 1)."""
    c, length = model.states, model.length
    return torch.tensor(list(itertools.product(range(c), repeat=length)), dtype=torch.long).reshape(-1, length)


def sequence_logprob(model: ExactDiscrete, seqs: torch.Tensor) -> torch.Tensor:
    """(N,) float64 log p(x) of clean sequences (N, L) under the chain (-inf for impossible ones)."""
    logp = torch.log(model.start)[seqs[:, 0]]  # (N,)
    log_t = torch.log(model.transitions)  # (C, C)
    for pos in range(1, seqs.shape[1]):
        logp = logp + log_t[seqs[:, pos - 1], seqs[:, pos]]
    return logp


def exact_distribution(model: ExactDiscrete, given: torch.Tensor | None = None, fixed: torch.Tensor | None = None,
                       log_tilt: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[tuple[int, ...], float]:
    """{sequence: probability} of the chain, conditioned on the positions fixed (L,) bool holding
    given (L,) tokens, and tilted by exp(log_tilt(seqs (N, L)) (N,)); zero-probability sequences left out."""
    seqs = all_sequences(model)
    logp = sequence_logprob(model, seqs)  # (N,)
    if fixed is not None:
        ok = (seqs[:, fixed] == given[fixed]).all(-1)  # (N,)
        logp = torch.where(ok, logp, torch.full_like(logp, -torch.inf))
    if log_tilt is not None:
        logp = logp + log_tilt(seqs).to(torch.float64)
    p = torch.softmax(logp, 0)  # (N,)
    keep = p > 0
    return {tuple(s): float(q) for s, q in zip(seqs[keep].tolist(), p[keep].tolist())}


def empirical(samples: torch.Tensor) -> dict[tuple[int, ...], float]:
    """{sequence: frequency} of samples (N, L)."""
    counts = Counter(tuple(r) for r in samples.tolist())
    n = samples.shape[0]
    return {k: v / n for k, v in counts.items()}


def total_variation(p: dict[tuple[int, ...], float], q: dict[tuple[int, ...], float]) -> float:
    """1/2 sum |p - q| over the union of supports."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def kl_divergence(p: dict[tuple[int, ...], float], q: dict[tuple[int, ...], float]) -> float:
    """KL(p || q) = sum p log(p / q); inf when p puts mass where q has none."""
    total = 0.0
    for k, pk in p.items():
        if pk > 0:
            qk = q.get(k, 0.0)
            if qk == 0.0:
                return float("inf")
            total += pk * float(torch.log(torch.tensor(pk / qk, dtype=torch.float64)))
    return total


def expected_tv(exact: dict[tuple[int, ...], float], n: int) -> float:
    """E[TV(empirical of n exact draws, exact)] ~ sum_k sqrt(p_k (1 - p_k) / (2 pi n)) (normal approximation):
    the floor a correct sampler's TV sits at, for stating test tolerances."""
    return sum((pk * (1 - pk) / (2 * torch.pi * n)) ** 0.5 for pk in exact.values())
