"""model.digits_classifier: the shipped clean classifier of the 8x8 digits (trained on the train split
by training/train_digits_classifier.py), the verifier, reward and feature extractor of the metrics."""
from __future__ import annotations

from typing import Any

from ..api import Node, node
from .classifier import Classifier
from .digits import WEIGHTS_DIR
from .networks.classifier_net import CleanClassifier, load_classifier
from .safetensors_model import file_state

WEIGHTS = WEIGHTS_DIR / "digits_classifier.safetensors"


@node("model.digits_classifier")
class ModelDigitsClassifier(Node):
    """log p(class | x0) and 64-d features of clean digits (Inception's role in FID, Heusel et al. 2017)."""

    def external_state(self) -> Any:
        """The weights file's size and mtime: retrained weights invalidate the cache."""
        return file_state(WEIGHTS)

    def run(self) -> Classifier:
        """Inputs (B, 8, 8) in [-1, 1]; log-probabilities (B, 10) and features (B, 64)."""
        return CleanClassifier(load_classifier(WEIGHTS))
