"""Potential: a log-weight of byte strings, as prefixes and as complete texts (docs/ARCHITECTURE.md,
"Tokens"). A boolean constraint is a potential with values 0 / -inf. Strategies see a potential through
a vocabulary (`bind`), as a `TokenPotential`: a log-weight per candidate token of a row (what AWRS
needs) and a full-vocabulary mask (what masking baselines need), both counted by `Evaluations`."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .state import TokenState
from .vocab import Vocabulary

NEG_INF = -math.inf


class Potential(ABC):
    """log phi(prefix) and log phi(complete text) of byte strings, batched; phi(prefix) = 0 means no
    completion of that prefix can have phi > 0."""

    @abstractmethod
    def prefix(self, texts: Sequence[bytes]) -> torch.Tensor:
        """(N,) float64 log-weight of each text as a prefix (partial-match semantics for constraints)."""

    @abstractmethod
    def complete(self, texts: Sequence[bytes]) -> torch.Tensor:
        """(N,) float64 log-weight of each text as a finished string."""

    def bind(self, vocab: Vocabulary) -> TokenPotential:
        """This potential seen through a vocabulary (grammar engines build their token tables here)."""
        return BytesTokenPotential(self, vocab)


@dataclass
class Evaluations:
    """How many (row, candidate token) pairs a strategy asked a potential about (a full mask counts V)."""

    candidates: int = 0
    masks: int = 0
    calls: int = 0

    def report(self) -> dict[str, int]:
        return {"constraint_evaluations": self.candidates, "constraint_masks": self.masks,
                "constraint_calls": self.calls}


class TokenPotential(ABC):
    """A Potential over the generated token ids of TokenState rows (prompts excluded)."""

    vocab: Vocabulary

    @abstractmethod
    def candidates(self, state: TokenState, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(N,) float64 log-weight of row rows[n]'s generated text extended by token tokens[n]: the prefix
        weight, or for an EOS token the complete weight of the row's text."""

    def mask(self, state: TokenState) -> torch.Tensor:
        """(B, V) float64 log-weight of every one-token extension of every row."""
        b, v = state.batch, self.vocab.size
        rows = torch.arange(b, device=state.device).repeat_interleave(v)  # (B V,)
        tokens = torch.arange(v, device=state.device).repeat(b)  # (B V,)
        return self.candidates(state, rows, tokens).reshape(b, v)

    def prefix_of(self, state: TokenState) -> torch.Tensor:
        """(B,) float64 log-weight of each row's generated text as a prefix."""
        return self.prefix_texts([self.vocab.decode(state.generated(i)) for i in range(state.batch)])

    def complete_of(self, state: TokenState) -> torch.Tensor:
        """(B,) float64 log-weight of each row's generated text as a finished string."""
        return self.complete_texts([self.vocab.decode(state.generated(i)) for i in range(state.batch)])

    @abstractmethod
    def prefix_texts(self, texts: Sequence[bytes]) -> torch.Tensor: ...

    @abstractmethod
    def complete_texts(self, texts: Sequence[bytes]) -> torch.Tensor: ...


class BytesTokenPotential(TokenPotential):
    """A byte-level Potential through a vocabulary: decode, then ask the potential."""

    def __init__(self, potential: Potential, vocab: Vocabulary):
        self.potential, self.vocab = potential, vocab

    def candidates(self, state: TokenState, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        texts = {int(r): self.vocab.decode(state.generated(int(r))) for r in rows.unique().tolist()}
        eos = self.vocab.is_eos(tokens).tolist()
        out = torch.empty(rows.shape[0], dtype=torch.float64)
        ext = [n for n, e in enumerate(eos) if not e]
        fin = [n for n, e in enumerate(eos) if e]
        if ext:
            out[ext] = self.potential.prefix([texts[int(rows[n])] + self.vocab.tokens[int(tokens[n])] for n in ext])
        if fin:
            out[fin] = self.potential.complete([texts[int(rows[n])] for n in fin])
        return out

    def prefix_texts(self, texts: Sequence[bytes]) -> torch.Tensor:
        return self.potential.prefix(texts)

    def complete_texts(self, texts: Sequence[bytes]) -> torch.Tensor:
        return self.potential.complete(texts)


class CountingPotential(TokenPotential):
    """Counts what a strategy asks of a TokenPotential into `evaluations`."""

    def __init__(self, inner: TokenPotential, evaluations: Evaluations):
        self.inner, self.vocab, self.evaluations = inner, inner.vocab, evaluations

    def candidates(self, state: TokenState, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        self.evaluations.candidates += int(rows.shape[0])
        self.evaluations.calls += 1
        return self.inner.candidates(state, rows, tokens)

    def mask(self, state: TokenState) -> torch.Tensor:
        self.evaluations.candidates += state.batch * self.vocab.size
        self.evaluations.masks += state.batch
        self.evaluations.calls += 1
        return self.inner.mask(state)

    def prefix_texts(self, texts: Sequence[bytes]) -> torch.Tensor:
        return self.inner.prefix_texts(texts)

    def complete_texts(self, texts: Sequence[bytes]) -> torch.Tensor:
        return self.inner.complete_texts(texts)
