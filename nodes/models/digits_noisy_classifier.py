"""model.digits_noisy_classifier: the shipped noise-conditional classifier of the 8x8 digits (trained
on noised train-split images by training/train_digits_classifier.py), for classifier guidance."""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ..api import Node, node
from .classifier import NoisyClassifier
from .digits import WEIGHTS_DIR
from .networks.classifier_net import NoisyNetClassifier, load_classifier
from .safetensors_model import file_state

WEIGHTS = WEIGHTS_DIR / "digits_noisy_classifier.safetensors"


class ShippedNoisyClassifier(Node):
    """A shipped noise-conditional ClassifierNet read from the weights file `weights` (shared base)."""

    weights: ClassVar[Path]

    def external_state(self) -> Any:
        """The weights file's size and mtime: retrained weights invalidate the cache."""
        return file_state(self.weights)

    def run(self) -> NoisyClassifier:
        """(x_sigma (B, 8, 8), sigma (B,)) -> log-probabilities (B, C), differentiable in x."""
        return NoisyNetClassifier(load_classifier(self.weights))


@node("model.digits_noisy_classifier")
class ModelDigitsNoisyClassifier(ShippedNoisyClassifier):
    """log p(class | x_sigma) of noised digits, for classifier guidance (Dhariwal & Nichol 2021, Sec. 4)."""

    weights: ClassVar[Path] = WEIGHTS
