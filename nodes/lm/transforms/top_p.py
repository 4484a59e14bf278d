"""lm.top_p: nucleus sampling, the smallest set of most likely tokens with mass >= p, renormalised."""
from __future__ import annotations

import torch
from pydantic import Field

from ...api import node
from ..model import LanguageModel
from .common import Truncation, TruncationNode


class TopP(Truncation):
    """Nucleus sampling (Holtzman et al. 2020), transformers' TopPLogitsWarper rule: a token goes when the
    mass of the tokens ranked at or below it is <= 1 - p. Tokens tied with the least likely kept one are
    kept too (transformers keeps an arbitrary subset of ties: its sort is not stable)."""

    def __init__(self, inner: LanguageModel, p: float, min_keep: int = 1):
        super().__init__(inner, min_keep)
        self.p = p

    def remove(self, logp: torch.Tensor) -> torch.Tensor:
        probs, order = torch.sort(torch.exp(logp), dim=-1, stable=True)  # (..., V) ascending
        gone = probs.cumsum(-1) <= 1 - self.p  # (..., V) in sorted order
        gone[..., -1] = False  # the most likely token always stays
        floor = torch.where(gone, torch.inf, probs).amin(-1, keepdim=True)  # (..., 1) least likely kept
        return torch.exp(logp) < floor


@node("lm.top_p", version=1)
class LMTopP(TruncationNode):
    """Nucleus (top-p) truncation of a language model's next-token distributions."""

    p: float = Field(0.9, gt=0.0, le=1.0, description="kept probability mass (1 keeps every possible token)")

    def run(self, lm: LanguageModel) -> LanguageModel:
        return TopP(lm, self.p, self.min_tokens_to_keep)
