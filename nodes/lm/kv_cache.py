"""A transformer's KV cache for rows of different lengths, gathered with the TokenState (pure torch).

Layout: per layer keys/values (B, H, S, D) whose S columns each hold one token of the row, or nothing.
`pos` (B, S) is the position of each column's token in its row (-1: an empty column, a pad or a token
that was cut back). Positions are explicit (rotary embeddings are applied with the token's own position),
so columns need not line up across rows: a call appends one block of columns, each row's new tokens
right-aligned in it (left padding), and attention masks out empty columns. Rolling a row back empties
the columns of its dropped tokens; `compact` squeezes empty columns out once they dominate.
`last` (B, V) keeps the distribution after the row's `seen` tokens, so a call with no new token
(window 1 after a truncation to a cached length that was seen) needs no forward pass."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .state import ModelCache, TokenState


@dataclass(frozen=True, eq=False, repr=False)
class KVCache(ModelCache):
    """Per-layer keys and values (B, H, S, D), column positions (B, S), tokens seen (B,), last log-probs (B, V)."""

    keys: tuple[torch.Tensor, ...]  # L x (B, H, S, D)
    values: tuple[torch.Tensor, ...]  # L x (B, H, S, D)
    pos: torch.Tensor  # (B, S) int64, -1 = empty column
    seen: torch.Tensor  # (B,) int64 tokens of each row in the cache
    last: torch.Tensor  # (B, V) log-probs of the token after the first `seen`

    @property
    def columns(self) -> int:
        return self.pos.shape[1]

    def __repr__(self) -> str:
        return f"KVCache(layers={len(self.keys)}, rows={self.pos.shape[0]}, columns={self.columns})"

    def select(self, idx: torch.Tensor) -> KVCache:
        """The cache of rows idx (B',) (rows may repeat)."""
        i = idx.to(self.pos.device)
        return KVCache(tuple(k[i] for k in self.keys), tuple(v[i] for v in self.values), self.pos[i],
                       self.seen[i], self.last[i])

    def cut(self, start: torch.Tensor) -> KVCache:
        """Columns of tokens at positions >= start (B,) emptied (nothing is copied but `pos`)."""
        pos = torch.where(self.pos >= start[:, None], torch.full_like(self.pos, -1), self.pos)
        return KVCache(self.keys, self.values, pos, torch.minimum(self.seen, start), self.last)

    def compact(self) -> KVCache:
        """The same cache with as few columns as the fullest row needs (each row's tokens right-aligned)."""
        full = self.pos >= 0  # (B, S)
        width = int(full.sum(1).max()) if full.numel() else 0
        order = torch.sort(full.to(torch.int8), dim=1, stable=True).indices[:, self.columns - width:]  # (B, S')
        take = lambda t: t.gather(2, order[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[3]))  # noqa: E731
        return KVCache(tuple(take(k) for k in self.keys), tuple(take(v) for v in self.values),
                       self.pos.gather(1, order), self.seen, self.last)

    def wasteful(self) -> bool:
        """True when at least half of the columns (and more than 16) are empty."""
        empty = int((self.pos < 0).sum(1).min()) if self.pos.numel() else 0
        return empty > 16 and 2 * empty >= self.columns


@dataclass(frozen=True)
class Block:
    """The tokens one forward pass feeds: each row's new tokens right-aligned in N columns."""

    ids: torch.Tensor  # (B, N) int64 token ids (0 in pad columns)
    pos: torch.Tensor  # (B, N) int64 positions, -1 in pad columns
    start: torch.Tensor  # (B,) first position fed
    reuse_last: torch.Tensor  # (B,) bool: the window's first distribution is the cache's `last`

    @property
    def width(self) -> int:
        return self.ids.shape[1]

    @property
    def padded(self) -> bool:
        return bool((self.pos < 0).any())


def plan_block(state: TokenState, window: int, cache: KVCache | None) -> Block:
    """What to feed so the W distributions after each row's last W prefixes can be read off.

    The first of them (after prefix length - W + 1) comes from feeding token length - W, unless the
    cache already covers that token and still holds the distribution after it (`last`, valid while
    the row was not cut back below what the cache saw)."""
    length, dev = state.length, state.device  # (B,)
    cached = state.cached if cache is not None else torch.zeros_like(length)
    need = length - window  # (B,) the token whose output is the window's first distribution
    no = torch.zeros_like(length, dtype=torch.bool)
    reuse = no if cache is None else (need == cached - 1) & (cache.seen == cached)  # (B,)
    start = torch.where(reuse, cached, torch.minimum(cached, need))  # (B,)
    n = length - start  # (B,) tokens to feed
    width = int(n.max())
    col = torch.arange(width, device=dev)[None, :]  # (1, N)
    p = start[:, None] + col - (width - n[:, None])  # (B, N) position of each column's token
    pad = p < start[:, None]
    ids = state.tokens.gather(1, p.clamp(0, state.capacity - 1))
    return Block(ids=torch.where(pad, 0, ids), pos=torch.where(pad, -1, p), start=start, reuse_last=reuse)


def attention_mask(old: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """(B, 1, N, S + N) bool: a query sees the filled cached columns and the filled block columns up to
    itself; every query sees itself, so pad queries stay finite (their outputs are never read)."""
    n = block.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=block.device).tril()  # (N, N)
    own = (block >= 0)[:, None, :] & causal[None]  # (B, N, N)
    own = own | torch.eye(n, dtype=torch.bool, device=block.device)[None]
    seen = (old >= 0)[:, None, :].expand(-1, n, -1)  # (B, N, S)
    return torch.cat([seen, own], dim=2)[:, None]
