"""TokenState: a token strategy's whole state, indexable like the sampler State (nodes/core/state.py).

`state[idx]` gathers rows, the language model's KV cache included, so resampling, forking and beam
search are gathers; `State`'s `particle` ids are the noise keys here too, and a token's noise key is
(seed, particle, position, slot) with position = the row's length before the token is appended."""
from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...graph.errors import NodeError

PAD = 0  # the id stored past a row's length (never read: every reader masks by length)


class ModelCache(ABC):
    """A language model's per-row memory of the prefix it has seen (e.g. a transformer's KV cache).
    Opaque to strategies, which only gather it with the state."""

    @abstractmethod
    def select(self, idx: torch.Tensor) -> ModelCache:
        """The cache of rows idx (B',) int64, in that order (rows may repeat)."""


def _index(idx: torch.Tensor | slice | Sequence[int] | int, device: torch.device) -> torch.Tensor:
    if isinstance(idx, int):
        idx = [idx]
    if isinstance(idx, slice):
        raise TypeError("index a TokenState with row indices, not a slice")
    idx = torch.as_tensor(idx, device=device)
    # a bool mask selects its True rows (as_tensor(..., long) would turn it into row indices 0 and 1)
    return idx.nonzero().flatten() if idx.dtype == torch.bool else idx.long()


@dataclass(frozen=True)
class TokenState:
    """Token ids (B, T) right-padded to a capacity T, with each row's length, prompt length, finished
    flag, particle id (noise key), log-probability of its generated tokens, and the model's cache, which
    covers the first `cached` (B,) tokens of each row."""

    tokens: torch.Tensor  # (B, T) int64, valid up to length
    length: torch.Tensor  # (B,) int64 tokens so far, prompt included
    prompt_length: torch.Tensor  # (B,) int64
    done: torch.Tensor  # (B,) bool: ended (EOS or capacity); never extended again
    particle: torch.Tensor  # (B,) int64 noise keys
    logp: torch.Tensor  # (B,) float64 log-probability of the generated tokens under the LM that chose them
    cached: torch.Tensor  # (B,) int64 tokens of each row the cache has seen (<= length)
    cache: ModelCache | None = None

    @classmethod
    def from_prompts(cls, prompts: Sequence[Sequence[int]], particle: torch.Tensor, capacity: int) -> TokenState:
        """Rows holding the given prompts (B of them), room for `capacity` tokens each, no cache yet."""
        longest = max((len(p) for p in prompts), default=0)
        if longest > capacity:
            raise NodeError(f"a prompt of {longest} tokens does not fit the capacity of {capacity} tokens")
        b, dev = len(prompts), particle.device
        tokens = torch.full((b, capacity), PAD, dtype=torch.long, device=dev)
        for i, p in enumerate(prompts):
            tokens[i, :len(p)] = torch.as_tensor(list(p), dtype=torch.long)
        length = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=dev)
        return cls(tokens=tokens, length=length, prompt_length=length.clone(),
                   done=torch.zeros(b, dtype=torch.bool, device=dev), particle=particle.to(dev, torch.long),
                   logp=torch.zeros(b, dtype=torch.float64, device=dev),
                   cached=torch.zeros(b, dtype=torch.long, device=dev))

    @property
    def batch(self) -> int:
        return self.tokens.shape[0]

    @property
    def capacity(self) -> int:
        return self.tokens.shape[1]

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    @property
    def position(self) -> torch.Tensor:
        """(B,) the position the next token takes: its noise step key."""
        return self.length

    @property
    def generated_length(self) -> torch.Tensor:
        """(B,) tokens generated after the prompt."""
        return self.length - self.prompt_length

    def row(self, i: int) -> list[int]:
        """Every token id of row i (prompt included)."""
        return self.tokens[i, :int(self.length[i])].tolist()

    def generated(self, i: int) -> list[int]:
        """The generated token ids of row i (prompt excluded)."""
        return self.tokens[i, int(self.prompt_length[i]):int(self.length[i])].tolist()

    def replace(self, **changes: Any) -> TokenState:
        return dataclasses.replace(self, **changes)

    def __getitem__(self, idx: torch.Tensor | Sequence[int] | int) -> TokenState:
        """Gather rows: every batch-leading tensor and the model cache, indexed alike."""
        i = _index(idx, self.device)
        return TokenState(tokens=self.tokens[i], length=self.length[i], prompt_length=self.prompt_length[i],
                          done=self.done[i], particle=self.particle[i], logp=self.logp[i], cached=self.cached[i],
                          cache=None if self.cache is None else self.cache.select(i))

    def append(self, token: torch.Tensor, logp: torch.Tensor | None = None,
               eos: torch.Tensor | None = None) -> TokenState:
        """Rows not yet done take token (B,) at their position; `eos` (B,) bool marks ending tokens, and rows
        that reach capacity end too. `logp` (B,) adds the chosen tokens' log-probabilities."""
        live = ~self.done  # (B,)
        if bool((live & (self.length >= self.capacity)).any()):
            raise NodeError("a live row has no room left: capacity must exceed the longest prompt")
        rows = torch.arange(self.batch, device=self.device)[live]
        tokens = self.tokens.clone()
        tokens[rows, self.length[live]] = token[live].to(torch.long)
        length = self.length + live.long()  # (B,)
        ended = length >= self.capacity
        if eos is not None:
            ended = ended | (eos & live)
        add = torch.zeros_like(self.logp) if logp is None else torch.where(live, logp.to(torch.float64), 0.0)
        return self.replace(tokens=tokens, length=length, done=self.done | ended, logp=self.logp + add)

    def truncate(self, length: torch.Tensor) -> TokenState:
        """Rows cut back to length (B,) (>= prompt length, <= current): speculative rejections. The cache
        then covers at most the kept tokens; the model discards what it saw beyond them."""
        length = torch.minimum(torch.maximum(length.to(self.length), self.prompt_length), self.length)
        return self.replace(length=length, cached=torch.minimum(self.cached, length),
                            done=self.done & (length == self.length))

    @staticmethod
    def cat(states: Sequence[TokenState]) -> TokenState:
        """Rows of states of one capacity, in order (caches must be absent: a model cache does not concatenate)."""
        if any(s.cache is not None for s in states):
            raise NodeError("TokenState.cat needs states without a model cache; gather one state instead")
        join = lambda name: torch.cat([getattr(s, name) for s in states])  # noqa: E731
        return TokenState(**{f.name: join(f.name) for f in dataclasses.fields(TokenState) if f.name != "cache"})
