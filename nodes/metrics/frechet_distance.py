"""metrics.frechet_distance: FD between Gaussian fits of features of samples and reference images
(FID of Heusel et al. 2017 with the project's clean classifier as the feature network: FD_digits)."""
from __future__ import annotations

import torch

from ..api import node
from ..core.context import NodeContext
from ..models.classifier import Classifier
from .common import frechet_distance
from .features import FeatureMetric


@node("metrics.frechet_distance")
class FrechetDistance(FeatureMetric):
    """Frechet distance of Gaussian feature fits, |mu1-mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2) (Heusel et al. 2017)."""

    def run(self, samples: torch.Tensor, reference: torch.Tensor, ctx: NodeContext,
            classifier: Classifier | None = None) -> float:
        """FD in the classifier's feature space (raw values without a classifier); lower is closer."""
        a, b = self.pair(samples, reference, classifier, ctx, at_least=2)  # (N, F), (M, F)
        value = frechet_distance(a, b)
        ctx.record(frechet_distance=value)
        return value
