"""lm.typical: locally typical sampling, the tokens whose surprisal is closest to the entropy, up to a mass."""
from __future__ import annotations

import torch
from pydantic import Field

from ...api import node
from ..model import LanguageModel
from ..state import TokenState
from .common import Truncation, TruncationNode, drop, entropy


class Typical(Truncation):
    """Locally typical sampling (Meister et al. 2023, Sec. 5): rank tokens by |-log p(x) - H|, keep the
    shortest prefix of that ranking with mass >= `mass` (transformers' TypicalLogitsWarper rule); tokens
    tied with the last kept one stay, and so do the min_keep best-ranked (ties in rank by token id)."""

    def __init__(self, inner: LanguageModel, mass: float, min_keep: int = 1):
        super().__init__(inner, min_keep)
        self.mass = mass

    def transform(self, logp: torch.Tensor, state: TokenState, window: int) -> torch.Tensor:
        return drop(logp, self.remove(logp))

    def remove(self, logp: torch.Tensor) -> torch.Tensor:
        shift = torch.abs(-logp - entropy(logp)[..., None])  # (..., V); impossible tokens: inf
        ranked, order = torch.sort(shift, dim=-1, stable=True)  # (..., V) most typical first
        cum = torch.exp(logp).gather(-1, order).cumsum(-1)  # (..., V)
        last = (cum < self.mass).sum(-1, keepdim=True).clamp(max=logp.shape[-1] - 1)  # (..., 1)
        gone = ranked > ranked.gather(-1, last)  # (..., V) in ranked order
        gone[..., :self.min_keep] = False
        return gone.scatter(-1, order, gone)


@node("lm.typical", version=1)
class LMTypical(TruncationNode):
    """Locally typical truncation of a language model's next-token distributions."""

    mass: float = Field(0.9, gt=0.0, lt=1.0, description="typical_p: mass of the kept, most typical tokens")

    def run(self, lm: LanguageModel) -> LanguageModel:
        return Typical(lm, self.mass, self.min_tokens_to_keep)
