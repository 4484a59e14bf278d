"""model.mnist_classifier: the shipped clean classifier of 28x28 MNIST (trained on the train split of
nodes/data/mnist.py by training/train_mnist_classifier.py), the feature network of the MNIST Frechet
distance (metrics.frechet_distance with this classifier) and the verifier of class-conditional samples."""
from __future__ import annotations

from typing import Any

from ..api import Node, node
from .classifier import Classifier
from .digits import WEIGHTS_DIR
from .networks.classifier_net import CleanClassifier, load_classifier
from .safetensors_model import file_state

WEIGHTS = WEIGHTS_DIR / "mnist_classifier.safetensors"


@node("model.mnist_classifier")
class ModelMnistClassifier(Node):
    """log p(class | x0) and 64-d features of clean MNIST digits (Inception's role in FID, Heusel et al. 2017)."""

    def external_state(self) -> Any:
        """The weights file's size and mtime: retrained weights invalidate the cache."""
        return file_state(WEIGHTS)

    def run(self) -> Classifier:
        """Inputs (B, 28, 28) in [-1, 1]; log-probabilities (B, 10) and features (B, 64)."""
        return CleanClassifier(load_classifier(WEIGHTS))
