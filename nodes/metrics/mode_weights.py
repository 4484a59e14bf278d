"""metrics.mode_weights: how far the samples' share of each mixture mode (or class) is from the
mixture's weights: each sample counts for its most probable component (or class) under the mixture."""
from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..models.gaussian_mixture import GaussianMixture
from .common import flat_points, frequencies, weight_errors


class ModeWeights(NamedTuple):
    total_variation: float  # (1/2) sum_k |f_k - w_k|
    max_error: float  # max_k |f_k - w_k|
    empirical: torch.Tensor  # (K,) float64 fraction of samples assigned to each mode (or class)


@node("metrics.mode_weights")
class MetricModeWeights(Node):
    """Per-mode mass error of samples, each assigned to its most probable component (mode coverage, Srivastava et al. 2017)."""

    by: Literal["component", "class"] = Field("component", description="compare per component, or per class "
                                              "label (the mixture's 'classes', posterior summed over components)")

    def run(self, samples: torch.Tensor, mixture: GaussianMixture, ctx: NodeContext) -> ModeWeights:
        x = flat_points(samples, "samples").to(mixture.device)  # (N, D)
        if x.shape[1] != mixture.shape[0]:
            raise NodeError(f"input 'samples' has {x.shape[1]} values per sample (shape {tuple(samples.shape)}) "
                            f"but input 'mixture' is over {mixture.shape[0]} dimensions")
        empirical, target = self.masses(x, mixture)  # (K,), (K,)
        tv, worst = weight_errors(empirical, target)
        table = [{"mode": k, "target": w, "empirical": f} for k, (w, f) in
                 enumerate(zip(target.tolist(), empirical.tolist()))]
        ctx.record(mode_weights_tv=tv, mode_weights_max_error=worst, mode_weights=table)
        return ModeWeights(tv, worst, empirical)

    def masses(self, x: torch.Tensor, mixture: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
        """(empirical, target) masses (K,) float64 on the CPU, per component or per class."""
        if self.by == "component":
            return frequencies(mixture.assign(x), mixture.weights.numel()), mixture.weights.cpu()
        if mixture.classes is None:
            raise NodeError("parameter 'by' is 'class', but the mixture has no class labels; set model.gmm "
                            "'classes' or use by='component'")
        classes = mixture.classes.cpu()
        k = int(classes.max()) + 1
        target = torch.zeros(k, dtype=torch.float64).index_add(0, classes, mixture.weights.cpu())  # (C,)
        posterior = mixture.class_log_posterior(x, x.new_zeros(x.shape[0]))  # (N, C)
        return frequencies(posterior.argmax(dim=1), k), target
