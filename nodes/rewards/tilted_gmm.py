"""reward.tilted_gmm: the exact reward-tilted target of an analytic GMM, a reference for the metrics."""
from __future__ import annotations

from pydantic import Field

from ..api import Node, node
from ..models.gaussian_mixture import GaussianMixture
from .reward import Reward
from .tilt import tilted


@node("reward.tilted_gmm", version=1)
class RewardTiltedGMM(Node):
    """The exact tilted density p(x) exp(lambda r(x)) / Z of a Gaussian mixture (conjugate Gaussian tilting)."""

    lam: float = Field(1.0, description="lambda, as given to the search strategy")

    def run(self, model: GaussianMixture, reward: Reward) -> GaussianMixture:
        """A GaussianMixture (exact sampler and log-density) for linear or quadratic rewards."""
        return tilted(model, reward, self.lam)
