"""metrics.precision_recall: improved precision and recall with k-NN manifolds in feature space."""
from __future__ import annotations

from typing import NamedTuple

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import node
from ..core.context import NodeContext
from ..models.classifier import Classifier
from .common import precision_recall
from .features import FeatureMetric


class PrecisionRecall(NamedTuple):
    precision: float  # fraction of samples inside the reference manifold (fidelity)
    recall: float  # fraction of reference points inside the sample manifold (coverage)


@node("metrics.precision_recall")
class MetricPrecisionRecall(FeatureMetric):
    """Improved precision and recall from k-NN balls in feature space (Kynkaanniemi et al. 2019, Sec. 2)."""

    k: int = Field(3, ge=1, description="neighbourhood size: each ball reaches a point's k-th nearest neighbour")

    def run(self, samples: torch.Tensor, reference: torch.Tensor, ctx: NodeContext,
            classifier: Classifier | None = None) -> PrecisionRecall:
        a, b = self.pair(samples, reference, classifier, ctx)  # (N, F), (M, F)
        smallest = min(a.shape[0], b.shape[0])
        if self.k >= smallest:
            raise NodeError(f"parameter 'k' ({self.k}) must be smaller than the number of points in each set "
                            f"(samples {a.shape[0]}, reference {b.shape[0]}); lower k or draw more points")
        precision, recall = precision_recall(a, b, self.k)
        ctx.record(precision=precision, recall=recall)
        return PrecisionRecall(precision, recall)
