"""Shared by the dataset nodes: a labelled image set cut into train / held-out / all, optionally one class."""
from __future__ import annotations

from typing import NamedTuple

import torch

from ...graph.errors import NodeError


class LabelledImages(NamedTuple):
    images: torch.Tensor  # (n, H, W) in [-1, 1]
    labels: torch.Tensor  # (n,) int64


def select(x: torch.Tensor, y: torch.Tensor, heldout: torch.Tensor, split: str, label: int | None, classes: int,
           name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images x (N, ...) and labels y (N,) of `split` ("train", "heldout", "all") given the held-out mask (N,),
    optionally only class `label`, in file order."""
    keep = {"train": ~heldout, "heldout": heldout, "all": torch.ones_like(y, dtype=torch.bool)}
    if split not in keep:
        raise NodeError(f"unknown {name} split '{split}': use 'train', 'heldout' or 'all'")
    if label is not None and not 0 <= label < classes:
        raise NodeError(f"label {label} is out of range: {name} has classes 0..{classes - 1} (or None for all)")
    sel = keep[split] if label is None else keep[split] & (y == label)  # (N,)
    return x[sel].clone(), y[sel].clone()
