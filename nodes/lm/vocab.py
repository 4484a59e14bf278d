"""Vocabulary: each token id's bytes and the end-of-sequence ids (docs/ARCHITECTURE.md, "Tokens").

Constraints and potentials see bytes, never ids: a vocabulary maps ids to bytes, so one constraint
serves every tokenizer."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from ...graph.errors import NodeError


@dataclass(frozen=True)
class Vocabulary:
    """Token bytes by id, and the ids that end a sequence (their bytes are never part of a text)."""

    tokens: tuple[bytes, ...]  # (V,) bytes of each token id
    eos: frozenset[int]  # end-of-sequence ids
    _index: dict[bytes, int] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        bad = sorted(i for i in self.eos if not 0 <= i < len(self.tokens))
        if bad:
            raise NodeError(f"end-of-sequence ids {bad} are outside the vocabulary of {len(self.tokens)} tokens")
        if not self.eos:
            raise NodeError("a vocabulary needs at least one end-of-sequence id")
        index: dict[bytes, int] = {}
        for i, b in enumerate(self.tokens):
            if i not in self.eos:
                index.setdefault(b, i)
        object.__setattr__(self, "_index", index)

    @property
    def size(self) -> int:
        return len(self.tokens)

    def id_of(self, token: bytes) -> int | None:
        """The lowest non-EOS id whose bytes are exactly `token`, or None."""
        return self._index.get(token)

    def check_ids(self, ids: Iterable[int], where: str) -> None:
        """NodeError naming the first id outside [0, V)."""
        for i in ids:
            if not 0 <= int(i) < self.size:
                raise NodeError(f"{where}: token id {int(i)} is outside the vocabulary (0..{self.size - 1})")

    def decode(self, ids: Sequence[int]) -> bytes:
        """The bytes of a token sequence; EOS tokens contribute nothing."""
        return b"".join(self.tokens[i] for i in ids if i not in self.eos)

    def is_eos(self, ids: torch.Tensor) -> torch.Tensor:
        """(...) bool: which of the ids (...) end a sequence."""
        eos = torch.tensor(sorted(self.eos), dtype=ids.dtype, device=ids.device)
        return torch.isin(ids, eos)


def text_of(data: bytes) -> str:
    """Bytes as text for reports and JSONL (invalid UTF-8, e.g. a cut multi-byte character, as U+FFFD)."""
    return data.decode("utf-8", errors="replace")
