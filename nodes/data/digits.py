"""data.digits and the one train/held-out split of scikit-learn's 8x8 digits that every training
script (training/) and every metric uses: held-out images are never seen by a shipped model.

The split is stratified and fixed: within each class the images are ordered by a seeded
permutation, and the HELDOUT images with the smallest within-class rank fraction are held out
(so each class gives 1/6 of its images, to within one)."""
from __future__ import annotations

from functools import lru_cache
from typing import Literal

import torch
from pydantic import Field

from ...graph.errors import NodeError
from .common import LabelledImages, select
from ..api import Node, node

HELDOUT = 300  # of 1797: ~1/6 of each class
SPLIT_SEED = 0
CLASSES = 10


@lru_cache(maxsize=1)
def _all_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(1797, 8, 8) images in [-1, 1] (pixels 0..16 scaled by 1/8, minus 1) and (1797,) labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise NodeError("the digits data need scikit-learn: pip install scikit-learn") from None
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32) / 8.0 - 1.0  # (N, 8, 8)
    return x, torch.tensor(d.target, dtype=torch.int64)


@lru_cache(maxsize=1)
def heldout_mask() -> torch.Tensor:
    """(1797,) bool: True for the HELDOUT held-out images (stratified, seed SPLIT_SEED)."""
    _, y = _all_digits()
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    frac = torch.empty(y.shape[0], dtype=torch.float64)  # (N,) rank fraction within the class
    for c in range(CLASSES):
        idx = (y == c).nonzero().squeeze(1)  # (n_c,)
        rank = torch.empty_like(idx)
        rank[torch.randperm(idx.numel(), generator=gen)] = torch.arange(idx.numel())
        frac[idx] = (rank.double() + 0.5) / idx.numel()
    mask = torch.zeros(y.shape[0], dtype=torch.bool)
    mask[torch.argsort(frac, stable=True)[:HELDOUT]] = True
    return mask


def digits_split(split: str = "train", label: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 8, 8) float32 in [-1, 1] and labels (n,) int64 of `split` ("train", "heldout", "all"),
    optionally only class `label`; the order is that of sklearn's load_digits."""
    return select(*_all_digits(), heldout_mask(), split, label, CLASSES, "digits")


@node("data.digits")
class DataDigits(Node):
    """scikit-learn's 8x8 digits (UCI optical digits, Alpaydin & Kaynak 1998) with a fixed stratified split."""

    split: Literal["train", "heldout", "all"] = Field("heldout", description="1497 training images, the 300 "
                                                      "held out from every shipped model, or all 1797")
    label: int | None = Field(None, ge=0, le=9, description="only this class; None = all classes")

    def run(self) -> LabelledImages:
        """Images (n, 8, 8) in [-1, 1] (the models' data scaling) and their labels (n,)."""
        return LabelledImages(*digits_split(self.split, self.label))
