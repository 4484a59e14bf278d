"""guidance.classifier: classifier guidance, the denoiser shifted along the gradient of a
noise-conditional classifier's log p(label | x_sigma).

With D(x) = x + sigma^2 grad log p(x) (Tweedie), adding s * grad log p(y | x) to the score
gives x0 + s sigma^2 grad log p(y | x); at s = 1 on the unconditional model this is exactly
the conditional denoiser (Bayes' rule). One classifier forward and backward is counted as one
evaluation."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import node
from ..core.denoiser import Denoiser
from ..core.state import bcast
from ..models.classifier import NoisyClassifier
from .common import Guidance, evaluations_of


@node("guidance.classifier")
class ClassifierGuidance(Guidance):
    """Classifier guidance x0 + s sigma^2 grad_x log p(y | x_sigma) (Dhariwal & Nichol 2021, Algorithm 1)."""

    label: int = Field(ge=0, description="the class y to guide towards")
    scale: float = Field(1.0, description="classifier scale s (1 = Bayes-exact conditional for an exact classifier)")

    def combine(self, x: torch.Tensor, sigma: torch.Tensor, x0_c: torch.Tensor, x0_o: torch.Tensor) -> torch.Tensor:
        return x0_c + self.scale * bcast(sigma ** 2, x) * x0_o  # x0_o: the classifier gradient (B, ...)

    def run(self, denoise: Denoiser, classifier: NoisyClassifier) -> Denoiser:
        """The guided Denoiser (1 model evaluation plus 1 classifier gradient per call inside the interval)."""
        return ClassifierGuided(self, denoise, classifier)


class ClassifierGuided(Denoiser):
    """A Denoiser plus the scaled gradient of a noisy classifier, inside the rule's sigma interval."""

    def __init__(self, rule: ClassifierGuidance, denoise: Denoiser, classifier: NoisyClassifier):
        self.rule, self.denoise, self.classifier = rule, denoise, classifier

    def to(self, device: torch.device) -> ClassifierGuided:
        return ClassifierGuided(self.rule, self.denoise.to(device), self.classifier.to(device))

    def gradient(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """grad_x log p(label | x_sigma) (B, ...); rows are independent, so the sum's gradient is per row."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = self.classifier(xg, sigma)  # (B, C)
            if self.rule.label >= logp.shape[1]:
                raise NodeError(f"guidance.classifier 'label' is {self.rule.label}, but the classifier has "
                                f"{logp.shape[1]} classes (0..{logp.shape[1] - 1}); pick one of those")
            (grad,) = torch.autograd.grad(logp[:, self.rule.label].sum(), xg)
        return grad  # (B, ...)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x0 = self.denoise(x, sigma)  # (B, ...)
        idx = self.rule.active(sigma).nonzero().squeeze(1)  # (A,)
        if idx.numel() == 0:
            return x0
        out = x0.clone()
        out[idx] = self.rule.combine(x[idx], sigma[idx], x0[idx], self.gradient(x[idx], sigma[idx]))
        return out

    def evaluations(self, sigma: torch.Tensor) -> int:
        return evaluations_of(self.denoise, sigma) + int(bool(self.rule.active(sigma).any()))
