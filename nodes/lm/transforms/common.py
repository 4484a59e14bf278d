"""Shared math of the LM transforms: entropy, the kept-at-least-k rule, and dropping tokens with
renormalisation. Inputs are normalised log-probs (..., V) with -inf for impossible tokens."""
from __future__ import annotations

import math
from abc import abstractmethod

import torch
from pydantic import Field

from ...api import Node
from ..model import LMTransform, LanguageModel, normalise
from ..state import TokenState


def entropy(logp: torch.Tensor) -> torch.Tensor:
    """(...,) Shannon entropy in nats of the distributions exp(logp) (..., V); impossible tokens add 0."""
    return -torch.where(torch.isfinite(logp), torch.exp(logp) * logp, 0.0).sum(-1)


def keep_top(logp: torch.Tensor, k: int) -> torch.Tensor:
    """(..., V) bool: tokens at least as likely as the k-th most likely (ties with it are kept too)."""
    kth = torch.topk(logp, min(k, logp.shape[-1]), dim=-1).values[..., -1:]  # (..., 1)
    return logp >= kth


def drop(logp: torch.Tensor, remove: torch.Tensor) -> torch.Tensor:
    """Log-probs (..., V) with the `remove` (..., V) tokens made impossible, renormalised."""
    return normalise(logp.masked_fill(remove, -math.inf))


class Truncation(LMTransform):
    """A transform that removes the tokens `remove` marks, except the min_keep most likely, and renormalises."""

    def __init__(self, inner: LanguageModel, min_keep: int = 1):
        super().__init__(inner)
        self.min_keep = min_keep

    def transform(self, logp: torch.Tensor, state: TokenState, window: int) -> torch.Tensor:
        return drop(logp, self.remove(logp) & ~keep_top(logp, self.min_keep))

    @abstractmethod
    def remove(self, logp: torch.Tensor) -> torch.Tensor:
        """(..., V) bool: the tokens this rule removes from the distributions (..., V)."""


class TruncationNode(Node):
    """Base of the truncation transform nodes: the floor on kept tokens (transformers' min_tokens_to_keep)."""

    min_tokens_to_keep: int = Field(1, ge=1, description="never keep fewer than this many most likely tokens")
