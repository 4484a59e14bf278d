"""model.digits_minority_classifier: the shipped noise-conditional classifier of the minority level
(0 most common .. 4 rarest; minority score of nodes/models/minority.py cut at train quintiles) of 8x8
digits, trained by training/train_digits_classifier.py --kind minority. Minority guidance needs no
node of its own: it is guidance.classifier with label 4 on the unconditional model.digits."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from ..api import node
from .digits import WEIGHTS_DIR
from .digits_noisy_classifier import ShippedNoisyClassifier

WEIGHTS = WEIGHTS_DIR / "digits_minority_classifier.safetensors"


@node("model.digits_minority_classifier")
class ModelDigitsMinorityClassifier(ShippedNoisyClassifier):
    """log p(minority level | x_sigma) of digits, for minority guidance (Um et al. 2024, Sec. 3.2)."""

    weights: ClassVar[Path] = WEIGHTS
