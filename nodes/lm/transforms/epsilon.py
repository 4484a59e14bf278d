"""lm.epsilon: epsilon sampling, tokens with probability below a fixed epsilon go."""
from __future__ import annotations

import torch
from pydantic import Field

from ...api import node
from ..model import LanguageModel
from .common import Truncation, TruncationNode


class Epsilon(Truncation):
    """Epsilon sampling (Hewitt et al. 2022, Sec. 3): remove p(x) < epsilon (transformers' EpsilonLogitsWarper)."""

    def __init__(self, inner: LanguageModel, epsilon: float, min_keep: int = 1):
        super().__init__(inner, min_keep)
        self.epsilon = epsilon

    def remove(self, logp: torch.Tensor) -> torch.Tensor:
        return torch.exp(logp) < self.epsilon  # (..., V)


@node("lm.epsilon", version=1)
class LMEpsilon(TruncationNode):
    """Epsilon truncation of a language model's next-token distributions."""

    epsilon: float = Field(3e-4, gt=0.0, lt=1.0, description="least probability a token keeps")

    def run(self, lm: LanguageModel) -> LanguageModel:
        return Epsilon(lm, self.epsilon, self.min_tokens_to_keep)
