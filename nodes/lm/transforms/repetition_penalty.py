"""lm.repetition_penalty: tokens already in the row are made less (or more) likely."""
from __future__ import annotations

import torch
from pydantic import Field

from ...api import Node, node
from ..model import LMTransform, LanguageModel, normalise, window_prefix_lengths
from ..state import TokenState


class RepetitionPenalty(LMTransform):
    """The CTRL repetition penalty (Keskar et al. 2019, Sec. 4.1) by transformers' RepetitionPenaltyLogitsProcessor
    rule: for each token in the prefix, a score s < 0 becomes s * penalty and s >= 0 becomes s / penalty. The
    scores here are the inner model's log-probs (a LanguageModel exposes no raw logits), so with penalty > 1
    every seen token's log p is multiplied by the penalty; each of the W distributions sees its own prefix."""

    def __init__(self, inner: LanguageModel, penalty: float, include_prompt: bool = True):
        super().__init__(inner)
        self.penalty, self.include_prompt = penalty, include_prompt

    def transform(self, logp: torch.Tensor, state: TokenState, window: int) -> torch.Tensor:
        seen = self.seen(state, window, logp.shape[-1])  # (B, W, V)
        penalised = torch.where(logp < 0, logp * self.penalty, logp / self.penalty)  # (B, W, V)
        return normalise(torch.where(seen, penalised, logp))

    def seen(self, state: TokenState, window: int, vocab: int) -> torch.Tensor:
        """(B, W, V) bool: which tokens occur in the prefix each of the W distributions conditions on."""
        ends = window_prefix_lengths(state, window)  # (B, W)
        pos = torch.arange(state.capacity, device=state.device)  # (T,)
        inside = pos[None, None, :] < ends[:, :, None]  # (B, W, T)
        if not self.include_prompt:
            inside = inside & (pos[None, None, :] >= state.prompt_length[:, None, None])
        ids = torch.where(inside, state.tokens[:, None, :], vocab)  # (B, W, T); vocab = a discarded column
        seen = torch.zeros(*ids.shape[:2], vocab + 1, dtype=torch.bool, device=state.device)  # (B, W, V + 1)
        return seen.scatter(-1, ids, True)[..., :vocab]


@node("lm.repetition_penalty", version=1)
class LMRepetitionPenalty(Node):
    """Repetition penalty on the tokens already in each row (CTRL; penalty > 1 discourages repeats)."""

    penalty: float = Field(1.2, gt=0.0, description="> 1 penalises repeats, < 1 rewards them, 1 does nothing")
    include_prompt: bool = Field(True, description="count the prompt's tokens as seen (transformers' default)")

    def run(self, lm: LanguageModel) -> LanguageModel:
        return RepetitionPenalty(lm, self.penalty, self.include_prompt)
