"""FeatureMetric: the base of metrics computed in a feature space (a clean classifier's embedding,
or the raw values when no classifier is connected): Frechet distance, precision/recall, diversity."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node
from ..core.context import NodeContext
from ..models.classifier import Classifier
from .common import embed


class FeatureMetric(Node):
    """Shared parameters and feature extraction of the feature-space metrics (not a node itself)."""

    batch: int = Field(512, ge=1, description="images per classifier call when extracting features")

    def features(self, x: torch.Tensor, port: str, classifier: Classifier | None, ctx: NodeContext,
                 at_least: int = 1) -> torch.Tensor:
        """Features (N, F) float64 of input `port`, which must hold at least `at_least` points."""
        f = embed(x, port, classifier, self.batch, ctx.device)  # (N, F)
        if f.shape[0] < at_least:
            raise NodeError(f"input '{port}' holds {f.shape[0]} points, but this metric needs at least {at_least}; "
                            f"draw a larger batch")
        return f

    def pair(self, samples: torch.Tensor, reference: torch.Tensor, classifier: Classifier | None,
             ctx: NodeContext, at_least: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of 'samples' (N, F) and 'reference' (M, F), checked to live in the same space."""
        a = self.features(samples, "samples", classifier, ctx, at_least)  # (N, F)
        b = self.features(reference, "reference", classifier, ctx, at_least)  # (M, F)
        if a.shape[1] != b.shape[1]:
            raise NodeError(f"inputs 'samples' (shape {tuple(samples.shape)}) and 'reference' (shape "
                            f"{tuple(reference.shape)}) give {a.shape[1]} and {b.shape[1]} features per point; "
                            f"compare images of the same shape")
        return a, b
