"""metrics.diversity: mean pairwise distance between samples in feature space."""
from __future__ import annotations

import torch

from ..api import node
from ..core.context import NodeContext
from ..models.classifier import Classifier
from .common import mean_pairwise_distance
from .features import FeatureMetric


@node("metrics.diversity")
class Diversity(FeatureMetric):
    """Mean pairwise feature distance of distinct samples (the pairwise-distance diversity score of Zhu et al. 2017)."""

    def run(self, samples: torch.Tensor, ctx: NodeContext, classifier: Classifier | None = None) -> float:
        """0 for identical samples; grows with spread (raw values without a classifier)."""
        value = mean_pairwise_distance(self.features(samples, "samples", classifier, ctx, at_least=2))
        ctx.record(diversity=value)
        return value
