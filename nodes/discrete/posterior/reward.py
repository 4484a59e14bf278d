"""SequenceReward: the port type of a log-reward on complete token sequences of a discrete diffusion,
`r(tokens (B, L), den) -> (B,)` float64 (-inf: forbidden). Search strategies over discrete particles
tilt the model's distribution by exp(r / alpha) or maximise r. Adapters: a token count (exact tests)
and any LM-issue Potential (nodes/lm/potential.py, e.g. constraint.regex) on the decoded text."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from pydantic import Field

from ....graph.errors import NodeError
from ...api import Node, node
from ...lm.potential import Potential
from ..denoiser import DiscreteDenoiser


class SequenceReward(ABC):
    """A batched log-reward of clean token sequences; `den` gives the vocabulary and the decoding."""

    @abstractmethod
    def __call__(self, tokens: torch.Tensor, den: DiscreteDenoiser) -> torch.Tensor:
        """(B,) float64 log-reward of the sequences tokens (B, L) int64."""


class TokenCountReward(SequenceReward):
    """r(x) = beta * (number of positions holding the token `text`)."""

    def __init__(self, text: str, beta: float):
        self.text, self.beta = text, beta

    def __call__(self, tokens: torch.Tensor, den: DiscreteDenoiser) -> torch.Tensor:
        ids = den.encode(self.text, "reward.token_count 'token'")
        if len(ids) != 1:
            raise NodeError(f"reward.token_count parameter 'token': {self.text!r} is {len(ids)} tokens of the model's "
                            "vocabulary; give the text of exactly one token")
        return self.beta * (tokens == ids[0]).sum(-1).to(torch.float64)  # (B,)


class PotentialReward(SequenceReward):
    """r(x) = scale * log phi(decoded text of x), phi a Potential's complete weight (a constraint: 0 / -inf)."""

    def __init__(self, potential: Potential, scale: float):
        self.potential, self.scale = potential, scale

    def __call__(self, tokens: torch.Tensor, den: DiscreteDenoiser) -> torch.Tensor:
        texts = [den.decode(row).encode() for row in tokens.tolist()]
        logw = self.potential.complete(texts).to(torch.float64).cpu()  # (B,)
        return torch.where(torch.isinf(logw), logw, self.scale * logw)  # -inf stays -inf whatever the scale


@node("reward.token_count", version=1)
class TokenCount(Node):
    """A token-count log-reward r(x) = beta * #{l : x_l = token} (exactly tilts a Markov chain; for tests)."""

    token: str = Field(..., min_length=1, description="the text of one token of the model's vocabulary")
    beta: float = Field(1.0, description="log-reward per occurrence")

    def run(self) -> SequenceReward:
        return TokenCountReward(self.token, self.beta)


@node("reward.text_potential", version=1)
class TextPotential(Node):
    """A Potential (nodes/lm/potential.py) on the decoded text of a sequence as its log-reward."""

    scale: float = Field(1.0, gt=0, description="log-reward = scale * log phi(text); -inf (forbidden) stays -inf")

    def run(self, potential: Potential) -> SequenceReward:
        return PotentialReward(potential, self.scale)
