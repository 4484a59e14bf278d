"""Classifier port types: `NoisyClassifier` log p(class | x_sigma) for guidance (classifier guidance,
GFCG) and `Classifier` log p(class | x0) on clean samples, the verifier, reward and feature
extractor of the metrics (accuracy, Frechet distance, precision/recall, diversity)."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class NoisyClassifier(ABC):
    """log p(class | x_sigma): (x (B, ...), sigma (B,)) -> (B, C) log-probabilities, differentiable in x."""

    @abstractmethod
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: torch.device) -> NoisyClassifier:
        return self

    def evaluations(self, sigma: torch.Tensor) -> int:
        """Batched model evaluations per call (a classifier gradient counts as one)."""
        return 1


class Classifier(ABC):
    """A classifier of clean samples: log-probabilities (B, C) and a feature embedding (B, F)."""

    classes: int  # C

    @abstractmethod
    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        """log p(class | x0) (B, C) of clean samples x0 (B, ...), float32 or float64, differentiable in x0."""

    @abstractmethod
    def features(self, x0: torch.Tensor) -> torch.Tensor:
        """The feature embedding (B, F) used by Frechet distance, precision/recall and diversity."""

    def to(self, device: torch.device) -> Classifier:
        return self
