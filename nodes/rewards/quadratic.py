"""reward.quadratic: r(x) = -|x - c|^2 / (2 s^2), bounded by 0."""
from __future__ import annotations

from pydantic import Field

from ..api import Node, node
from .reward import QuadraticReward, Reward


@node("reward.quadratic", version=1)
class RewardQuadratic(Node):
    """A Gaussian-log-likelihood reward -|x - c|^2/(2 s^2) (a conjugate tilt of Gaussian mixtures)."""

    center: list[float] = Field(..., min_length=1, description="c: the point of maximal reward")
    scale: float = Field(1.0, gt=0, description="s: the length scale")

    def run(self) -> Reward:
        return QuadraticReward(self.center, self.scale)
