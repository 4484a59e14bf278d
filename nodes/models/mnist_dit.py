"""model.mnist_dit: the shipped small class-conditional DiT of real 28x28 MNIST (networks/dit.py:
patch 4, 49 tokens, width 96, 4 adaLN-Zero blocks), trained on the train split of nodes/data/mnist.py
by training/train_dit.py under EDM preconditioning (sigma_data 0.5) with a null class for CFG, weights
stored as float16 (nodes/models/weights/mnist_dit.safetensors; the loader casts them to float32).
The network is a BlockNetwork (embed -> blocks -> head) for block- and token-level methods."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..api import Node, node
from .labelled import Labelled
from .networks.dit import load_dit
from .safetensors_model import file_state, mlp_model

WEIGHTS = Path(__file__).resolve().parent / "weights" / "mnist_dit.safetensors"


@node("model.mnist_dit")
class ModelMnistDiT(Node):
    """Class-conditional 28x28 MNIST diffusion transformer with a null class for CFG (Peebles & Xie 2023)."""

    def external_state(self) -> Any:
        """The weights file's size and mtime: retrained weights invalidate the cache."""
        return file_state(WEIGHTS)

    def run(self) -> Labelled:
        """Samples are (B, 28, 28) in [-1, 1]; bound to the null class until model.condition picks a digit."""
        return mlp_model(load_dit(WEIGHTS))
