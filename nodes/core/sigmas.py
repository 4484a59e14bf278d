"""Sigmas: the noise levels a sampler walks through (k-diffusion / EDM convention)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ...graph.errors import NodeError


@dataclass(frozen=True)
class Sigmas:
    """A 1-D float64 tensor of noise levels, non-increasing and non-negative (schedules end in 0)."""

    values: torch.Tensor  # (S+1,)

    def __post_init__(self) -> None:
        v = self.values
        if v.ndim != 1 or v.numel() < 2:
            raise NodeError(f"sigmas must be a 1-D tensor of at least 2 levels, got shape {tuple(v.shape)}")
        if not torch.isfinite(v).all() or (v < 0).any():
            raise NodeError(f"sigmas must be finite and >= 0, got {v.tolist()}")
        if (v[1:] > v[:-1]).any():
            raise NodeError(f"sigmas must be non-increasing, got {v.tolist()}")
        object.__setattr__(self, "values", v.detach().to(torch.float64).cpu())

    @classmethod
    def of(cls, values: Any) -> Sigmas:
        return cls(torch.as_tensor(values, dtype=torch.float64))

    @property
    def steps(self) -> int:
        return self.values.numel() - 1

    @property
    def sigma_max(self) -> float:
        return float(self.values[0])

    def __len__(self) -> int:
        return self.values.numel()

    def cache_encode(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"values": self.values}, {}

    @classmethod
    def cache_decode(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Sigmas:
        return cls(tensors["values"])
