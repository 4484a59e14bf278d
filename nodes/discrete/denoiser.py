"""DiscreteDenoiser: the port type of every discrete-diffusion model (docs/ARCHITECTURE.md, "Tokens").

`den(tokens (B, L), t (B,)) -> (B, L, V)` log p(clean token at each position | noised sequence, t),
normalised over V, -inf where impossible. Masked (absorbing-state) models have a mask id that never
gets probability, and at every unmasked position a point mass on the token there (the "carry-over"
of MDLM, Sahoo et al. 2024: an absorbing process never changes a revealed token). Uniform-noise
models (mask_id None) give a full posterior at every position. Time-agnostic models ignore t
(Zheng et al. 2024 show masked models need none); the argument is still passed."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal

import torch

from ...graph.errors import NodeError
from ..lm.model import normalise
from ..lm.vocab import Vocabulary, text_of

NoiseKind = Literal["masked", "uniform"]


class DiscreteDenoiser(ABC):
    """Clean-token posteriors of noised token sequences; V = vocab.size ids, mask id included."""

    vocab: Vocabulary  # (V,) bytes by id; the mask id's bytes are b""; EOS ids pad a short text to L
    mask_id: int | None  # the absorbing state (masked models) or None (uniform-noise models)
    length: int  # the longest sequence L the model takes

    @abstractmethod
    def __call__(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B, L, V) log p(x0_l = v | x_t, t) for tokens (B, L) int64 and times t (B,) float64."""

    @property
    def noise(self) -> NoiseKind:
        return "uniform" if self.mask_id is None else "masked"

    @property
    def clean_ids(self) -> torch.Tensor:
        """(K,) int64: the ids a clean sequence may hold (every id but the mask); uniform noise draws among them."""
        return torch.tensor([i for i in range(self.vocab.size) if i != self.mask_id], dtype=torch.long)

    def encode(self, text: str, where: str = "text") -> list[int]:
        """The ids of a text, one per token of the vocabulary (greedy longest match); NodeError naming
        `where` and the byte offset when a part of the text is not in the vocabulary."""
        data, ids, i = text.encode(), [], 0
        lengths = sorted({len(b) for b in self.vocab.tokens if b}, reverse=True)
        while i < len(data):
            match = next((m for k in lengths if (m := self.vocab.id_of(data[i:i + k])) is not None), None)
            if match is None or match == self.mask_id:
                raise NodeError(f"{where}: {data[i:i + 1]!r} at byte {i} of {text!r} is not in the model's "
                                f"vocabulary {self.alphabet()!r}")
            ids.append(match)
            i += len(self.vocab.tokens[match])
        return ids

    def alphabet(self) -> str:
        """Every clean token's text, for error messages."""
        return "".join(text_of(b) for i, b in enumerate(self.vocab.tokens) if b and i != self.mask_id)

    def decode(self, ids: list[int]) -> str:
        """The text of a clean sequence: tokens up to the first EOS (padding after it is dropped)."""
        end = next((k for k, i in enumerate(ids) if i in self.vocab.eos), len(ids))
        return text_of(self.vocab.decode([i for i in ids[:end] if i != self.mask_id]))

    def check_tokens(self, tokens: torch.Tensor, where: str) -> None:
        """NodeError when tokens (B, L) is longer than the model's context or holds ids outside [0, V)."""
        if tokens.ndim != 2:
            raise NodeError(f"{where}: token ids must be (B, L), got shape {tuple(tokens.shape)}")
        if tokens.shape[1] > self.length:
            raise NodeError(f"{where}: a sequence of {tokens.shape[1]} tokens is longer than the model's context "
                            f"of {self.length}; shorten the template or use a model with a longer context")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab.size):
            raise NodeError(f"{where}: token ids must lie in 0..{self.vocab.size - 1}")


def carry_over(logits: torch.Tensor, tokens: torch.Tensor, mask_id: int | None) -> torch.Tensor:
    """(B, L, V) log-probs from a network's logits (B, L, V): the mask id gets -inf and, for masked
    models, every unmasked position a point mass on its token (MDLM's SUBS parametrisation)."""
    logp = logits.clone()
    if mask_id is None:
        return normalise(logp)
    logp[..., mask_id] = -math.inf
    logp = normalise(logp)  # (B, L, V)
    kept = tokens != mask_id  # (B, L)
    point = torch.full_like(logp, -math.inf).scatter_(-1, tokens.clamp(min=0)[..., None], 0.0)  # (B, L, V)
    return torch.where(kept[..., None], point, logp)


class CountingDiscreteDenoiser(DiscreteDenoiser):
    """Counts batched calls (NFE) and rows of an inner denoiser; everything else delegates."""

    def __init__(self, inner: DiscreteDenoiser):
        self.inner = inner
        self.vocab, self.mask_id, self.length = inner.vocab, inner.mask_id, inner.length
        self.calls = 0
        self.rows = 0

    def __call__(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += tokens.shape[0]
        return self.inner(tokens, t)

    def encode(self, text: str, where: str = "text") -> list[int]:
        return self.inner.encode(text, where)

    def decode(self, ids: list[int]) -> str:
        return self.inner.decode(ids)
