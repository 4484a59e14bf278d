"""reward.classifier: r(x0) = log p(label | x0) of a clean-sample classifier, bounded by 0."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..models.classifier import Classifier
from .reward import Reward


class ClassifierReward(Reward):
    """r(x0) = log p(label | x0) (B,) of a Classifier; a log-probability, so r_max = 0."""

    r_max = 0.0

    def __init__(self, classifier: Classifier, label: int):
        self.classifier, self.label = classifier, label

    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        logp = self.classifier(x0)  # (B, C)
        if logp.ndim != 2 or logp.shape[0] != x0.shape[0]:
            raise NodeError(f"reward.classifier: the classifier returned shape {tuple(logp.shape)} for "
                            f"{x0.shape[0]} samples; a Classifier must return log-probabilities (B, C)")
        return logp[:, self.label]  # (B,)


@node("reward.classifier", version=1)
class RewardClassifier(Node):
    """The class log-likelihood reward log p(y | x0) of a clean classifier (e.g. Ma et al. 2025 verifiers)."""

    label: int = Field(..., ge=0, description="the target class y whose log-probability is the reward")

    def run(self, classifier: Classifier) -> Reward:
        """A batched, order-preserving, differentiable reward with r_max = 0."""
        if self.label >= classifier.classes:
            raise NodeError(f"reward.classifier parameter 'label' is {self.label} but the classifier has "
                            f"{classifier.classes} classes; use a label in 0..{classifier.classes - 1}")
        return ClassifierReward(classifier, self.label)
