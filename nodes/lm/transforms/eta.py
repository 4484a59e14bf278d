"""lm.eta: eta sampling, an entropy-dependent probability floor."""
from __future__ import annotations

import math

import torch
from pydantic import Field

from ...api import node
from ..model import LanguageModel
from .common import Truncation, TruncationNode, entropy


class Eta(Truncation):
    """Eta sampling (Hewitt et al. 2022, Sec. 4): remove p(x) < min(eps, sqrt(eps) exp(-H)), H the entropy
    (transformers' EtaLogitsWarper)."""

    def __init__(self, inner: LanguageModel, epsilon: float, min_keep: int = 1):
        super().__init__(inner, min_keep)
        self.epsilon = epsilon

    def remove(self, logp: torch.Tensor) -> torch.Tensor:
        eta = torch.clamp(math.sqrt(self.epsilon) * torch.exp(-entropy(logp)), max=self.epsilon)  # (...,)
        return torch.exp(logp) < eta[..., None]  # (..., V)


@node("lm.eta", version=1)
class LMEta(TruncationNode):
    """Eta truncation of a language model's next-token distributions."""

    epsilon: float = Field(3e-4, gt=0.0, lt=1.0, description="epsilon of the floor min(eps, sqrt(eps) exp(-H))")

    def run(self, lm: LanguageModel) -> LanguageModel:
        return Eta(lm, self.epsilon, self.min_tokens_to_keep)
