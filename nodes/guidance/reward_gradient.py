"""guidance.reward_gradient: guidance by the gradient of any differentiable Reward of the x0 estimate,
x0 + s sigma^2 grad_x r(D(x, sigma)), the gradient taken through the denoiser (DPS-style).

For a Gaussian prior and a linear reward this is exact: the posterior p(x0 | x) is Gaussian with a
covariance independent of x, so grad_x log E[exp(s r(x0)) | x] = s grad_x r(D(x)) and the guided
denoiser is that of the tilted target p(x0) exp(s r(x0)) / Z. Elsewhere it is the usual
first-order (Jensen) approximation of that tilt."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import node
from ..core.denoiser import Denoiser
from ..rewards.reward import Reward
from .common import GuidanceInterval, X0GradientGuided


@node("guidance.reward_gradient")
class RewardGradient(GuidanceInterval):
    """Reward guidance through the x0 estimate (Chung et al. 2023, DPS; Bansal et al. 2024, universal guidance)."""

    scale: float = Field(1.0, description="s: strength of the tilt exp(s r(x0)); 0 = unguided")

    def run(self, denoise: Denoiser, reward: Reward) -> Denoiser:
        """The guided Denoiser (1 model evaluation plus 1 backward pass per call inside the interval)."""

        def objective(x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            r = reward(x0)  # (B,)
            if r.shape != x0.shape[:1] or not r.requires_grad:
                raise NodeError(f"guidance.reward_gradient needs a differentiable reward with one number per "
                                f"sample, (B,); got shape {tuple(r.shape)}, requires_grad={r.requires_grad} "
                                f"(is the denoiser differentiable in x, and the reward in x0?)")
            return r

        return X0GradientGuided(self, denoise, objective, self.scale)
