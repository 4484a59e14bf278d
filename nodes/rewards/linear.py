"""reward.linear: r(x) = a . x + b, the reward whose tilt of a Gaussian mixture is a shifted mixture."""
from __future__ import annotations

from pydantic import Field

from ..api import Node, node
from .reward import LinearReward, Reward


@node("reward.linear", version=1)
class RewardLinear(Node):
    """A linear reward r(x) = a.x + b (exponential tilting of Gaussians, e.g. Singhal et al. 2025 toy tasks)."""

    a: list[float] = Field(..., min_length=1, description="direction, one number per coordinate of x0")
    b: float = Field(0.0, description="offset (does not change any tilted target)")

    def run(self) -> Reward:
        return LinearReward(self.a, self.b)
