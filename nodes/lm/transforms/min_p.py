"""lm.min_p: keep tokens whose probability is at least min_p times the top token's, renormalised."""
from __future__ import annotations

import torch
from pydantic import Field

from ...api import node
from ..model import LanguageModel
from .common import Truncation, TruncationNode


class MinP(Truncation):
    """Min-p sampling (Nguyen et al. 2024), transformers' MinPLogitsWarper rule: p(x) < min_p max p goes."""

    def __init__(self, inner: LanguageModel, min_p: float, min_keep: int = 1):
        super().__init__(inner, min_keep)
        self.min_p = min_p

    def remove(self, logp: torch.Tensor) -> torch.Tensor:
        probs = torch.exp(logp)  # (..., V)
        return probs < self.min_p * probs.amax(-1, keepdim=True)


@node("lm.min_p", version=1)
class LMMinP(TruncationNode):
    """Min-p truncation of a language model's next-token distributions."""

    min_p: float = Field(0.1, ge=0.0, le=1.0, description="fraction of the top token's probability a token needs")

    def run(self, lm: LanguageModel) -> LanguageModel:
        return MinP(lm, self.min_p, self.min_tokens_to_keep)
