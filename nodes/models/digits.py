"""model.digits: the shipped class-conditional EDM model of scikit-learn's 8x8 digits
(trained by training/train_digits.py; weights in nodes/models/weights/)."""
from __future__ import annotations

from pathlib import Path

from ..api import Node, node
from .labelled import Labelled
from .networks.mlp_denoiser import load_mlp
from .safetensors_model import edm_model

WEIGHTS = Path(__file__).resolve().parent / "weights" / "digits_edm.safetensors"


@node("model.digits")
class ModelDigits(Node):
    """Class-conditional 8x8 digits denoiser with a null class for CFG (Karras et al. 2022; Ho & Salimans 2022)."""

    def run(self) -> Labelled:
        """Samples are (B, 8, 8) in [-1, 1]; bound to the null class until model.condition picks a digit."""
        return edm_model(load_mlp(WEIGHTS))
