"""model.gmm_classifier: the exact noise-conditional classifier log p(class | x_sigma) of a
labelled mixture, the classifier that classifier guidance assumes (Dhariwal & Nichol 2021)."""
from __future__ import annotations

import torch

from ..api import Node, node
from .classifier import NoisyClassifier
from .gaussian_mixture import GaussianMixture


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
