"""lm.top_k: keep the k most likely next tokens (ties with the k-th kept too), renormalised."""
from __future__ import annotations

import torch
from pydantic import Field

from ...api import Node, node
from ..model import LanguageModel
from .common import Truncation, keep_top


class TopK(Truncation):
    """Top-k sampling (Fan et al. 2018), as transformers' TopKLogitsWarper: ties with the k-th are kept."""

    def __init__(self, inner: LanguageModel, k: int):
        super().__init__(inner)
        self.k = k

    def remove(self, logp: torch.Tensor) -> torch.Tensor:
        return ~keep_top(logp, self.k)


@node("lm.top_k", version=1)
class LMTopK(Node):
    """Top-k truncation of a language model's next-token distributions."""

    k: int = Field(50, ge=1, description="tokens kept per distribution (more where the k-th is tied)")

    def run(self, lm: LanguageModel) -> LanguageModel:
        return TopK(lm, self.k)
