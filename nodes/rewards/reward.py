"""Reward: the port type `(x0: Tensor[B, ...]) -> Tensor[B]` that search strategies maximise or tilt by.

Rewards are batched and order-preserving (row i of the output scores row i of x0), differentiable
in x0, and declare an upper bound `r_max` where one exists (rejection sampling needs it)."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ...graph.errors import NodeError


class Reward(ABC):
    """A batched reward r(x0) (B,) of clean samples x0 (B, ...)."""

    r_max: float | None = None  # sup of r over x0, or None when r is unbounded above

    @abstractmethod
    def __call__(self, x0: torch.Tensor) -> torch.Tensor: ...


class LinearReward(Reward):
    """r(x) = a . x + b (unbounded above: r_max is None)."""

    def __init__(self, a: torch.Tensor, b: float = 0.0):
        self.a, self.b = torch.as_tensor(a, dtype=torch.float64).flatten(), float(b)  # (D,)

    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        flat = check_dim(x0, self.a.numel(), "reward.linear 'a'")  # (B, D)
        return flat @ self.a.to(flat) + self.b  # (B,)


class QuadraticReward(Reward):
    """r(x) = -|x - c|^2 / (2 s^2), at most 0 (r_max = 0) at x = c."""

    r_max = 0.0

    def __init__(self, center: torch.Tensor, scale: float):
        self.center, self.scale = torch.as_tensor(center, dtype=torch.float64).flatten(), float(scale)  # (D,)

    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        flat = check_dim(x0, self.center.numel(), "reward.quadratic 'center'")  # (B, D)
        return -((flat - self.center.to(flat)) ** 2).sum(-1) / (2 * self.scale ** 2)  # (B,)


def check_dim(x0: torch.Tensor, d: int, what: str) -> torch.Tensor:
    """x0 (B, ...) flattened to (B, D), or a NodeError naming the mismatch."""
    flat = x0.reshape(x0.shape[0], -1)  # (B, D)
    if flat.shape[1] != d:
        raise NodeError(f"{what} has {d} numbers but samples have {flat.shape[1]} per row (shape "
                        f"{tuple(x0.shape[1:])}); give {flat.shape[1]} numbers")
    return flat
