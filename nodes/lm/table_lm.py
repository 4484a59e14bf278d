"""model.table_lm: an exact language model given by a table (a first-order Markov chain over
multi-byte tokens), so distributions over complete strings can be enumerated (nodes/lm/exact.py)."""
from __future__ import annotations

import math

import torch
from pydantic import Field, field_validator, model_validator

from ...graph.errors import NodeError
from ..api import Node, node
from .model import LanguageModel, check_window, window_prefix_lengths
from .state import TokenState
from .vocab import Vocabulary


class TableLM(LanguageModel):
    """p(next | last token) from a (V, V) table of log-probabilities; BOS starts every empty prompt."""

    def __init__(self, token_texts: list[str], table: torch.Tensor, max_length: int):
        n = len(token_texts)
        self.eos_id, self.bos_id = n, n + 1
        self.vocab = Vocabulary(tokens=(*(t.encode() for t in token_texts), b"", b""), eos=frozenset({self.eos_id}))
        self.table = table  # (V, V) float64 log p(next | last), rows of EOS and BOS included
        self.max_length = max_length

    def encode(self, text: str) -> list[int]:
        """BOS, then the text cut greedily into the longest matching tokens."""
        data, ids, i = text.encode(), [self.bos_id], 0
        lengths = sorted({len(t) for t in self.vocab.tokens if t}, reverse=True)
        while i < len(data):
            match = next((self.vocab.id_of(data[i:i + k]) for k in lengths if self.vocab.id_of(data[i:i + k])
                          is not None), None)
            if match is None:
                raise NodeError(f"the prompt {text!r} cannot be cut into this table's tokens at byte {i}")
            ids.append(match)
            i += len(self.vocab.tokens[match])
        return ids

    def next_logprobs(self, state: TokenState, window: int = 1) -> tuple[torch.Tensor, TokenState]:
        check_window(state, window)
        last = state.tokens.gather(1, window_prefix_lengths(state, window) - 1)  # (B, W) the last token of each prefix
        return self.table.to(state.device)[last], state.replace(cached=state.length.clone())  # (B, W, V)


def check_chain_weights(n: int, start: list[float], transitions: list[list[float]] | None) -> None:
    """ValueError naming the row when start or a transition row of a chain over n tokens then EOS is not
    n + 1 finite weights >= 0 with a positive sum, or when there are not n transition rows."""
    rows = [("start", start)] + [(f"transitions[{i}]", r) for i, r in enumerate(transitions or [])]
    if transitions is not None and len(transitions) != n:
        raise ValueError(f"transitions needs {n} rows (one per token), got {len(transitions)}")
    for name, row in rows:
        if len(row) != n + 1:
            raise ValueError(f"{name} needs {n + 1} weights ({n} tokens, then EOS), got {len(row)}")
        if any(not math.isfinite(w) or w < 0 for w in row) or sum(row) <= 0:
            raise ValueError(f"{name} must be finite weights >= 0 with a positive sum")


def table_of(n_tokens: int, start: list[float], transitions: list[list[float]] | None) -> torch.Tensor:
    """(V, V) log-probabilities, V = n_tokens + 2 (EOS, BOS); BOS and EOS rows follow `start`; BOS never follows."""
    rows = [start] * n_tokens if transitions is None else transitions
    probs = torch.tensor([*rows, start, start], dtype=torch.float64)  # (V, n + 1)
    probs = probs / probs.sum(-1, keepdim=True)
    full = torch.cat([probs, torch.zeros(probs.shape[0], 1, dtype=torch.float64)], -1)  # (V, V): BOS column 0
    return torch.log(full)


@node("model.table_lm", version=1)
class ModelTableLM(Node):
    """An exact Markov-chain LM over multi-byte tokens; EOS and BOS are appended as the last two ids."""

    tokens: list[str] = Field(["a", "b", "ab", "é"], min_length=1,
                              description="token texts (UTF-8, distinct, non-empty); ids 0..n-1, then EOS, BOS")
    start: list[float] = Field([0.3, 0.2, 0.2, 0.1, 0.2],
                               description="p(first token), n + 1 weights (the last is EOS), normalised")
    transitions: list[list[float]] | None = Field(
        None, description="row i: p(next | token i), n rows of n + 1 weights (EOS last); default: every row = start")
    max_length: int = Field(64, ge=2, le=1_000_000, description="context window in tokens (BOS included)")

    @field_validator("tokens")
    @classmethod
    def _distinct(cls, tokens: list[str]) -> list[str]:
        if any(t == "" for t in tokens):
            raise ValueError("a token must have at least one character")
        if len(set(tokens)) != len(tokens):
            raise ValueError("tokens must be distinct")
        return tokens

    @model_validator(mode="after")
    def _shapes(self) -> ModelTableLM:
        check_chain_weights(len(self.tokens), self.start, self.transitions)
        return self

    def run(self) -> LanguageModel:
        return TableLM(self.tokens, table_of(len(self.tokens), self.start, self.transitions), self.max_length)
