"""LanguageModel: the port type of every LM node; LM transforms map a LanguageModel to another.

The token analogue of Denoiser (docs/ARCHITECTURE.md, "Tokens"): `next_logprobs(state)` gives the
next-token log-probabilities (B, W, V) of each row for its last W prefixes (W = 1 for plain decoding;
speculative sampling verifies K drafted tokens with W = K + 1 in one call) and returns the state with
the model's cache advanced over every token of each row. Log-probabilities are float32 or float64 with
-inf for impossible tokens; each row's values over V logsumexp to 0."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from ...graph.errors import NodeError
from .state import TokenState
from .vocab import Vocabulary


class LanguageModel(ABC):
    """Next-token distributions over `vocab` for batches of token prefixes."""

    vocab: Vocabulary
    max_length: int  # context window: prompt plus generated tokens

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """The token ids of a prompt text (this model's tokenizer)."""

    @abstractmethod
    def next_logprobs(self, state: TokenState, window: int = 1) -> tuple[torch.Tensor, TokenState]:
        """(B, W, V) log p(next token | row's first length - W + 1 + w tokens), w < W, and the state
        with its cache covering all `length` tokens of each row. Needs W <= length - cached + 1
        (the cache keeps the last distribution it computed) and length >= 1 (a prompt of a token)."""

    def start(self, prompts: Sequence[Sequence[int]], particle: torch.Tensor, max_new_tokens: int) -> TokenState:
        """Rows holding prompts (each at least one token), room for max_new_tokens more, within max_length."""
        if any(len(p) == 0 for p in prompts):
            raise NodeError("an empty prompt: give at least one token (e.g. the model's BOS token)")
        for p in prompts:
            self.vocab.check_ids(p, "prompt")
        longest = max(len(p) for p in prompts)
        if longest + max_new_tokens > self.max_length:
            raise NodeError(f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds the model's "
                            f"context of {self.max_length} tokens; shorten the prompt or lower max_new_tokens")
        return TokenState.from_prompts(prompts, particle, longest + max_new_tokens)


class LMTransform(LanguageModel):
    """A LanguageModel that reshapes another's next-token distributions (temperature, truncation, penalties).
    Subclasses implement `transform`; everything else delegates to the inner model."""

    def __init__(self, inner: LanguageModel):
        self.inner = inner
        self.vocab = inner.vocab
        self.max_length = inner.max_length

    def encode(self, text: str) -> list[int]:
        return self.inner.encode(text)

    def next_logprobs(self, state: TokenState, window: int = 1) -> tuple[torch.Tensor, TokenState]:
        logp, state = self.inner.next_logprobs(state, window)
        return self.transform(logp, state, window), state

    @abstractmethod
    def transform(self, logp: torch.Tensor, state: TokenState, window: int) -> torch.Tensor:
        """Transformed log-probs (B, W, V) from the inner ones (B, W, V), normalised over V."""


def check_window(state: TokenState, window: int) -> None:
    """NodeError unless every row can serve `window` distributions under next_logprobs' contract: 1 <= W <=
    min(length, length - cached + 1) (models with a cache may rely on it; reference models check it, so that a strategy
    asking for more fails in the tests, not on a real model's KV cache)."""
    room = torch.minimum(state.length - state.cached + 1, state.length)  # (B,) and never before the first token
    if window < 1 or bool((window > room).any()):
        row = int(torch.nonzero(window > room)[0, 0]) if window >= 1 else 0
        raise NodeError(f"next_logprobs(window={window}) on row {row} of {int(state.length[row])} tokens with "
                        f"{int(state.cached[row])} cached: the window may reach back at most to the last cached "
                        f"distribution and never before the first token (window <= min(length, length - cached + 1)); "
                        f"this is a bug in the calling node")


def window_prefix_lengths(state: TokenState, window: int) -> torch.Tensor:
    """(B, W) int64: the prefix length each of the W distributions of next_logprobs conditions on."""
    return state.length[:, None] - window + 1 + torch.arange(window, device=state.device)[None, :]


def normalise(logits: torch.Tensor) -> torch.Tensor:
    """log-softmax over the last axis that keeps rows of all -inf as -inf (no NaN)."""
    top = logits.amax(-1, keepdim=True)
    safe = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return logits - (safe + torch.log(torch.exp(logits - safe).sum(-1, keepdim=True)))
