"""model.gmm_classifier: the exact noise-conditional classifier log p(class | x_sigma) of a
labelled mixture, the classifier that classifier guidance assumes (Dhariwal & Nichol 2021)."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..api import Node, node
from .gaussian_mixture import GaussianMixture


class NoisyClassifier(ABC):
    """log p(class | x_sigma): (x (B, ...), sigma (B,)) -> (B, C) log-probabilities, differentiable in x."""

    @abstractmethod
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: torch.device) -> NoisyClassifier:
        return self

    def evaluations(self, sigma: torch.Tensor) -> int:
        """Batched model evaluations per call (a classifier gradient counts as one)."""
        return 1


class MixtureClassifier(NoisyClassifier):
    """Bayes' rule over a labelled mixture's noised components: exact at every sigma."""

    def __init__(self, mixture: GaussianMixture):
        self.mixture = mixture

    def to(self, device: torch.device) -> MixtureClassifier:
        return MixtureClassifier(self.mixture.to(device))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.mixture.class_log_posterior(x, sigma)  # (B, C)


@node("model.gmm_classifier")
class ModelGMMClassifier(Node):
    """The exact noisy classifier p(class | x_sigma) of a labelled Gaussian mixture (Dhariwal & Nichol 2021, Sec. 4)."""

    def run(self, model: GaussianMixture) -> NoisyClassifier:
        model.class_log_posterior(model.means[:1], model.means.new_zeros(1))  # fails early, naming 'classes'
        return MixtureClassifier(model)
