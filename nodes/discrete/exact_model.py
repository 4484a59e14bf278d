"""model.exact_discrete: an explicit distribution over short token sequences (a Markov chain with an
absorbing end token that pads to L) whose exact clean-token posterior given any noised sequence comes
from the forward-backward recursions (Rabiner 1989): what model.gmm is to the continuous solvers.

Masked noise observes each position exactly or not at all; uniform noise observes it through the
channel p(x_t = u | x0 = v) = alpha [u = v] + (1 - alpha) / K (Austin et al. 2021, D3PM's uniform
kernel). Either way the sequence is an HMM with per-position evidence, so the posterior marginals
p(x0_l | x_t) are exact; nodes/discrete/exact.py enumerates the joint."""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator

from ..api import Node, node
from ..lm.table_lm import check_chain_weights
from ..lm.vocab import Vocabulary
from .denoiser import DiscreteDenoiser
from .schedule import MaskSchedule
from .schedules.cosine import CosineSchedule
from .schedules.linear import LinearSchedule

MAX_SEQUENCES = 1 << 20  # enumeration bound: (K + 1)^L complete sequences


class ExactDiscrete(DiscreteDenoiser):
    """A first-order Markov chain over K tokens and EOS (EOS absorbing), length L, as a denoiser."""

    def __init__(self, token_texts: list[str], start: torch.Tensor, transitions: torch.Tensor, length: int,
                 noise: Literal["masked", "uniform"], schedule: MaskSchedule):
        k = len(token_texts)
        self.eos_id = k
        self.mask_id = k + 1 if noise == "masked" else None
        texts = [t.encode() for t in token_texts] + [b""] + ([b""] if noise == "masked" else [])
        self.vocab = Vocabulary(tokens=tuple(texts), eos=frozenset({k}))
        self.length = length
        self.start = start  # (K + 1,) float64 p(x_1), EOS last
        self.transitions = transitions  # (K + 1, K + 1) float64 p(x_{l+1} | x_l), EOS row: EOS w.p. 1
        self.schedule = schedule  # alpha(t) of the uniform channel (unused for masked noise)

    @property
    def states(self) -> int:
        return self.start.numel()

    def evidence(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B, L, K + 1) float64 likelihood of each position's observation given each clean token."""
        c = self.states
        if self.mask_id is not None:
            seen = torch.nn.functional.one_hot(tokens.clamp(max=c - 1), c).to(torch.float64)  # (B, L, C)
            return torch.where((tokens == self.mask_id)[..., None], torch.ones_like(seen), seen)
        alpha = self.schedule.alpha(t.to(torch.float64))[:, None, None]  # (B, 1, 1)
        seen = torch.nn.functional.one_hot(tokens, c).to(torch.float64)  # (B, L, C)
        return alpha * seen + (1.0 - alpha) / c

    def __call__(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        post = posterior(self.start.to(tokens.device), self.transitions.to(tokens.device), self.evidence(tokens, t))
        logp = torch.log(post)  # (B, L, C)
        if self.mask_id is None:
            return logp
        return torch.cat([logp, torch.full_like(logp[..., :1], -math.inf)], -1)  # (B, L, V): mask never clean


def posterior(start: torch.Tensor, trans: torch.Tensor, evidence: torch.Tensor) -> torch.Tensor:
    """(B, L, C) float64 p(x_l = c | evidence) of a Markov chain (start (C,), trans (C, C)) with
    per-position evidence likelihoods (B, L, C): scaled forward-backward. Evidence of probability 0
    (a sampler's independent draws can give EOS then a token) gets the evidence itself, normalised
    (uniform at masked positions), so the sampler can finish and metrics count the row impossible."""
    b, length, c = evidence.shape
    fwd = torch.empty_like(evidence)
    f = start[None, :] * evidence[:, 0]  # (B, C)
    fwd[:, 0] = f / f.sum(-1, keepdim=True)
    for pos in range(1, length):
        f = (fwd[:, pos - 1] @ trans) * evidence[:, pos]  # (B, C)
        fwd[:, pos] = f / f.sum(-1, keepdim=True)
    bwd = torch.ones_like(evidence)
    for pos in range(length - 2, -1, -1):
        g = (evidence[:, pos + 1] * bwd[:, pos + 1]) @ trans.T  # (B, C)
        bwd[:, pos] = g / g.sum(-1, keepdim=True)
    joint = fwd * bwd  # (B, L, C)
    post = joint / joint.sum(-1, keepdim=True)
    impossible = torch.isnan(post).any(-1).any(-1)  # (B,) evidence the chain cannot produce (0 / 0)
    return torch.where(impossible[:, None, None], evidence / evidence.sum(-1, keepdim=True), post)


def chain_of(n_tokens: int, start: list[float], transitions: list[list[float]] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """start (C,) and transitions (C, C) float64, C = n_tokens + 1 (EOS last and absorbing)."""
    s = torch.tensor(start, dtype=torch.float64)
    rows = torch.tensor(transitions if transitions is not None else [start] * n_tokens, dtype=torch.float64)
    eos = torch.zeros(1, n_tokens + 1, dtype=torch.float64)
    eos[0, -1] = 1.0
    trans = torch.cat([rows, eos])
    return s / s.sum(), trans / trans.sum(-1, keepdim=True)


@node("model.exact_discrete", version=1)
class ModelExactDiscrete(Node):
    """An exact discrete-diffusion denoiser: a Markov chain over tokens padded by an absorbing EOS."""

    tokens: list[str] = Field(["a", "b", "c"], min_length=1, max_length=7,
                              description="token texts (distinct, non-empty); ids 0..K-1, then EOS, then MASK")
    start: list[float] = Field([0.5, 0.3, 0.15, 0.05], description="p(first token), K + 1 weights (EOS last)")
    transitions: list[list[float]] | None = Field(
        [[0.1, 0.6, 0.2, 0.1], [0.5, 0.1, 0.3, 0.1], [0.3, 0.3, 0.1, 0.3]],
        description="row i: p(next | token i), K rows of K + 1 weights (EOS last); None: every row = start")
    length: int = Field(6, ge=1, le=10, description="sequence length L (texts shorter than L end in EOS padding)")
    noise: Literal["masked", "uniform"] = Field("masked", description="absorbing (mask token) or uniform noise")
    uniform_schedule: Literal["linear", "cosine"] = Field(
        "linear", description="alpha(t) of the uniform channel (uniform noise only; pair it with the same mask_schedule)")

    @field_validator("tokens")
    @classmethod
    def _distinct(cls, tokens: list[str]) -> list[str]:
        if any(t == "" for t in tokens) or len(set(tokens)) != len(tokens):
            raise ValueError("tokens must be distinct and non-empty")
        return tokens

    @model_validator(mode="after")
    def _shapes(self) -> ModelExactDiscrete:
        n = len(self.tokens)
        check_chain_weights(n, self.start, self.transitions)
        if (n + 1) ** self.length > MAX_SEQUENCES:
            raise ValueError(f"{n + 1}^{self.length} sequences is too many to enumerate (at most {MAX_SEQUENCES}); "
                             "use fewer tokens or a shorter length")
        return self

    def run(self) -> DiscreteDenoiser:
        start, trans = chain_of(len(self.tokens), self.start, self.transitions)
        schedule = LinearSchedule(1) if self.uniform_schedule == "linear" else CosineSchedule(1)
        return ExactDiscrete(self.tokens, start, trans, self.length, self.noise, schedule)
