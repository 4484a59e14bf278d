"""metrics.gmm_log_likelihood: exact mean log-density of samples under a reference distribution
(a GaussianMixture, or any Distribution with an exact log_prob)."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Distribution
from .common import flat_points


@node("metrics.gmm_log_likelihood")
class GMMLogLikelihood(Node):
    """Mean exact log-likelihood (1/N) sum_i log p(x_i) of samples under a known density (higher is closer to its modes)."""

    reference_samples: int = Field(0, ge=0, description="exact draws whose mean log-likelihood (a Monte Carlo "
                                   "-entropy, the value a perfect sampler reaches) is recorded beside; 0: none")
    seed: int = Field(0, description="seed of those reference draws, independent of the workflow seed")

    def run(self, samples: torch.Tensor, reference: Distribution, ctx: NodeContext) -> float:
        flat_points(samples, "samples")  # rejects empty and non-finite batches with a located message
        value = mean_log_prob(reference, samples.detach().to(torch.float64), "samples")
        ctx.record(log_likelihood=value)
        if self.reference_samples:
            draws = reference.sample(self.reference_samples, torch.Generator().manual_seed(self.seed))
            ctx.record(reference_log_likelihood=mean_log_prob(reference, draws, "reference"))
        return value


def mean_log_prob(reference: Distribution, x: torch.Tensor, port: str) -> float:
    """Mean of reference.log_prob over x (N, ...), a NodeError where a log-density is NaN or +inf."""
    lp = reference.log_prob(x).to(torch.float64)  # (N,)
    if bool(torch.isnan(lp).any() | torch.isposinf(lp).any()):
        raise NodeError(f"input 'reference' gave NaN/+inf log-densities for input '{port}'; "
                        f"check that it is a proper density over points of shape {tuple(x.shape[1:])}")
    return float(lp.mean())
