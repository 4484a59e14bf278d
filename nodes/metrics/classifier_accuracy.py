"""metrics.classifier_accuracy: how often a clean classifier recognises the intended class in the
samples, and how sure it is (mean p(target | x)), overall and per target class."""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..models.classifier import Classifier
from .common import flat_points, hits_and_confidence, in_chunks


class Accuracy(NamedTuple):
    accuracy: float  # fraction of samples whose most probable class is their target
    confidence: float  # mean p(target | x) under the classifier


@node("metrics.classifier_accuracy")
class ClassifierAccuracy(Node):
    """Target-class accuracy and mean confidence p(target | x) of samples under a clean verifier classifier."""

    target: int | None = Field(None, ge=0, description="class every sample should show; None: per-sample 'labels'")
    batch: int = Field(512, ge=1, description="images per classifier call")

    def run(self, samples: torch.Tensor, classifier: Classifier, ctx: NodeContext,
            labels: torch.Tensor | None = None) -> Accuracy:
        flat_points(samples, "samples")  # rejects empty and non-finite batches with a located message
        targets = self.targets(samples.shape[0], labels, classifier.classes)  # (N,)
        logp = in_chunks(classifier.to(ctx.device), samples.detach().to(ctx.device), self.batch).cpu()  # (N, C)
        hit, conf = hits_and_confidence(logp, targets)  # (N,), (N,) p(target | x)
        result = Accuracy(float(hit.mean()), float(conf.mean()))
        ctx.record(accuracy=result.accuracy, confidence=result.confidence)
        if labels is not None:
            ctx.record(per_class=per_class(targets, hit, conf))
        return result

    def targets(self, n: int, labels: torch.Tensor | None, classes: int) -> torch.Tensor:
        """The target class (N,) int64 of each sample, from 'target' or the 'labels' input (exactly one)."""
        if labels is None and self.target is None:
            raise NodeError("no target class: set parameter 'target' or connect input 'labels' (one per sample)")
        if labels is not None and self.target is not None:
            raise NodeError("parameter 'target' and input 'labels' both give target classes; keep one")
        if labels is None:
            t = torch.full((n,), self.target, dtype=torch.int64)
        else:
            if labels.shape != (n,) or labels.is_floating_point() or labels.is_complex():
                raise NodeError(f"input 'labels' must be integer class labels of shape ({n},) matching 'samples', "
                                f"got {labels.dtype} of shape {tuple(labels.shape)}")
            t = labels.detach().to("cpu", torch.int64)
        bad = t[(t < 0) | (t >= classes)]
        if bad.numel():
            where = f"parameter 'target' ({self.target})" if labels is None else f"input 'labels' ({int(bad[0])})"
            raise NodeError(f"{where} is not a class of the classifier, which knows classes 0..{classes - 1}")
        return t


def per_class(targets: torch.Tensor, hit: torch.Tensor, conf: torch.Tensor) -> dict[str, dict[str, Any]]:
    """{class: {count, accuracy, confidence}} over the samples (N,) of each target class present."""
    table = {}
    for c in targets.unique().tolist():
        mask = targets == c  # (N,)
        table[str(c)] = {"count": int(mask.sum()), "accuracy": float(hit[mask].mean()),
                         "confidence": float(conf[mask].mean())}
    return table
