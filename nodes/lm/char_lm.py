"""model.char_lm: the shipped character-level causal transformer (Vaswani et al. 2017; GPT-style
pre-norm blocks, learned positions) trained by training/train_char_lm.py on strings of the repo's
grammar (nodes/lm/grammar/), each string BOS s EOS.

Vocabulary: id 0 = EOS, id 1 = BOS (both empty bytes; BOS is never generated: its probability is 0),
ids 2.. = the grammar's bytes. `encode(text)` is BOS followed by the text's bytes, so the model
continues a prompt as the grammar's conditional p(rest | prefix) would.

KV cache (`CharKVCache`): per layer keys and values (B, H, T, Dh) at each row's own positions 0..,
and the log-probabilities computed after every position (B, T, V), valid for the first `valid` (B,)
positions of each row. A call computes only positions cached..length-1 of each row (rows of
different lengths in one batch) and serves any window from the stored log-probabilities. A cache
is written in place only by its first successor call on the exact positions it holds; any other
use (a second call from the same state, or a truncated state) writes into a copy, so states a
strategy keeps never change."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..models.networks.checkpoint import load_network
from ..models.safetensors_model import file_state
from .model import LanguageModel, normalise
from .state import ModelCache, TokenState
from .vocab import Vocabulary

WEIGHTS = Path(__file__).resolve().parent / "weights" / "char_lm.safetensors"
EOS, BOS, FIRST_CHAR = 0, 1, 2
EXAMPLE = '{"alphabet": "0123456789-", "d_model": 64, "layers": 3, "heads": 4, "context": 96}'

# store(layer, k, v) -> (keys, values, key positions): how a block finds the keys it attends to
KeyStore = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class CharLMConfig(BaseModel):
    """Architecture of the character transformer."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    alphabet: str = Field(min_length=1)  # the characters of ids 2.. (ASCII), in id order
    d_model: int = Field(64, ge=8)
    layers: int = Field(3, ge=1)
    heads: int = Field(4, ge=1)
    context: int = Field(96, ge=2)  # positions (BOS included) the model has embeddings for

    @property
    def vocab_size(self) -> int:
        return FIRST_CHAR + len(self.alphabet)


class Block(torch.nn.Module):
    """Pre-norm transformer block: multi-head self-attention (causal, or bidirectional for the masked
    diffusion model of nodes/discrete/mdm.py) then a 4x GELU MLP."""

    def __init__(self, d: int, heads: int, causal: bool = True):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.norm1, self.norm2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(d, 4 * d), torch.nn.GELU(), torch.nn.Linear(4 * d, d))

    def forward(self, h: torch.Tensor, pos: torch.Tensor, keys: Callable[[torch.Tensor, torch.Tensor],
                tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        b, n, d = h.shape  # (B, N, D) at positions pos (B, N)
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        k_all, v_all, k_pos = keys(k, v)  # (B, H, Tk, Dh) twice, (B, Tk) positions
        mask = k_pos[:, None, None, :] <= pos[:, None, :, None] if self.causal else None  # (B, 1, N, Tk) by position
        a = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask)  # (B, H, N, Dh)
        h = h + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return h + self.mlp(self.norm2(h))


class CharTransformer(torch.nn.Module):
    """Token and position embeddings, `layers` blocks (causal or bidirectional), a final norm and the tied
    output head."""

    def __init__(self, config: CharLMConfig, causal: bool = True):
        super().__init__()
        self.config = config
        d = config.d_model
        if d % config.heads:
            raise NodeError(f"d_model={d} must be a multiple of heads={config.heads}")
        self.tok = torch.nn.Embedding(config.vocab_size, d)
        self.pos = torch.nn.Embedding(config.context, d)
        self.blocks = torch.nn.ModuleList(Block(d, config.heads, causal) for _ in range(config.layers))
        self.norm = torch.nn.LayerNorm(d)
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)

    def forward(self, ids: torch.Tensor, pos: torch.Tensor, store: KeyStore | None = None) -> torch.Tensor:
        """Logits (B, N, V) of the next token after each of ids (B, N) at positions pos (B, N) (bidirectional:
        of the token at each position); without a store the N tokens attend to each other (training),
        with one to the cached keys too."""
        h = self.tok(ids) + self.pos(pos)  # (B, N, D)
        for i, block in enumerate(self.blocks):
            h = block(h, pos, (lambda k, v: (k, v, pos)) if store is None else (lambda k, v, i=i: store(i, k, v)))
        return self.norm(h) @ self.tok.weight.T  # (B, N, V)


def char_logprobs(logits: torch.Tensor) -> torch.Tensor:
    """Log-probabilities (..., V) from logits with BOS impossible (it only ever starts a row)."""
    return normalise(logits.index_fill(-1, torch.tensor([BOS], device=logits.device), float("-inf")))


class CharKVCache(ModelCache):
    """Keys/values per layer (B, H, T, Dh), log-probs after each position (B, T, V), valid positions (B,),
    and the network that computed them (another model never reads them)."""

    def __init__(self, net: CharTransformer, keys: list[torch.Tensor], values: list[torch.Tensor],
                 logp: torch.Tensor, valid: torch.Tensor):
        self.net, self.keys, self.values, self.logp, self.valid = net, keys, values, logp, valid
        self.writable = True  # until a call writes past `valid` (then the successor owns the buffers)

    @classmethod
    def empty(cls, net: CharTransformer, batch: int, capacity: int, device: torch.device) -> CharKVCache:
        config = net.config
        h, dh = config.heads, config.d_model // config.heads
        kv = lambda: [torch.zeros(batch, h, capacity, dh, device=device) for _ in range(config.layers)]  # noqa: E731
        return cls(net, kv(), kv(), torch.zeros(batch, capacity, config.vocab_size, device=device),
                   torch.zeros(batch, dtype=torch.long, device=device))

    def select(self, idx: torch.Tensor) -> CharKVCache:
        return CharKVCache(self.net, [k[idx] for k in self.keys], [v[idx] for v in self.values], self.logp[idx],
                           self.valid[idx])

    def copy(self) -> CharKVCache:
        return self.select(torch.arange(self.valid.shape[0], device=self.valid.device))

    def successor(self, state: TokenState) -> CharKVCache:
        """The cache a call on `state` may write into: these buffers if no other state can still read
        the positions it will overwrite, else a copy."""
        if self.writable and torch.equal(state.cached, self.valid):
            self.writable = False
            return CharKVCache(self.net, self.keys, self.values, self.logp, self.valid)
        return self.copy()


class CharLM(LanguageModel):
    """The character transformer as a LanguageModel with a per-row KV cache."""

    def __init__(self, net: CharTransformer):
        self.net = net
        self.config = net.config
        chars = tuple(c.encode("ascii") for c in self.config.alphabet)
        self.vocab = Vocabulary(tokens=(b"", b"") + chars, eos=frozenset({EOS}))
        self.max_length = self.config.context
        self._ids = {c: FIRST_CHAR + i for i, c in enumerate(self.config.alphabet)}

    def encode(self, text: str) -> list[int]:
        """BOS then one id per character (NodeError naming a character the model does not know)."""
        bad = sorted({c for c in text if c not in self._ids})
        if bad:
            raise NodeError(f"model.char_lm: the prompt has characters {bad} outside the model's alphabet "
                            f"{self.config.alphabet!r}")
        return [BOS] + [self._ids[c] for c in text]

    def next_logprobs(self, state: TokenState, window: int = 1) -> tuple[torch.Tensor, TokenState]:
        """(B, W, V) after each row's last W prefixes; computes only the positions the cache lacks."""
        if not 1 <= window <= int(state.length.min()):
            raise NodeError(f"window={window} needs every row to hold at least that many tokens "
                            f"(shortest row: {int(state.length.min())})")
        if state.capacity > self.max_length:
            raise NodeError(f"a state of capacity {state.capacity} exceeds the model's context of {self.max_length}")
        cache = self._cache_of(state)
        with torch.no_grad():
            self._advance(state, cache)
        positions = state.length[:, None] - window + torch.arange(window, device=state.device)  # (B, W)
        logp = cache.logp.gather(1, positions[..., None].expand(-1, -1, self.config.vocab_size))  # (B, W, V)
        cache.valid = state.length.clone()
        return logp, state.replace(cache=cache, cached=state.length.clone())

    def _cache_of(self, state: TokenState) -> CharKVCache:
        """The cache to advance: the state's own (or a copy of it), or an empty one when the state has none
        of this model's (another model's cache, or rows of another shape)."""
        own = isinstance(state.cache, CharKVCache) and state.cache.net is self.net
        if own and state.cache.logp.shape[:2] == state.tokens.shape:
            cache = state.cache.successor(state)
            cache.valid = torch.minimum(cache.valid, state.cached)
            return cache
        return CharKVCache.empty(self.net, state.batch, state.capacity, state.device)

    def _advance(self, state: TokenState, cache: CharKVCache) -> None:
        """Run the network on positions valid..length-1 of each row, writing keys, values and log-probs."""
        start, count = cache.valid, state.length - cache.valid  # (B,) each
        n = int(count.max())
        if n == 0:
            return
        step = torch.arange(n, device=state.device)
        pos = (start[:, None] + step).clamp(max=state.capacity - 1)  # (B, N)
        live = step[None, :] < count[:, None]  # (B, N) positions to compute
        rows, cols = live.nonzero(as_tuple=True)  # (M,) each
        at = pos[rows, cols]  # (M,) positions written
        width = int(state.length.max())
        key_pos = torch.arange(width, device=state.device).expand(state.batch, width)  # (B, Tk)

        def store(layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            keys, values = cache.keys[layer], cache.values[layer]  # (B, H, T, Dh)
            keys[rows, :, at] = k[rows, :, cols]
            values[rows, :, at] = v[rows, :, cols]
            return keys[:, :, :width], values[:, :, :width], key_pos

        logits = self.net(state.tokens.gather(1, pos), pos, store)  # (B, N, V)
        cache.logp[rows, at] = char_logprobs(logits[rows, cols])


def load_char_lm(path: str | Path = WEIGHTS) -> CharLM:
    """The CharLM of a safetensors file written by training/train_char_lm.py (weights cast to float32)."""
    return CharLM(load_network(path, None, CharLMConfig, CharTransformer, EXAMPLE))


@node("model.char_lm", version=1)
class ModelCharLM(Node):
    """The shipped character transformer on the repo's grammar (Vaswani et al. 2017), with a KV cache."""

    weights: str | None = Field(None, description="a .safetensors file from training/train_char_lm.py; "
                                "None = the shipped nodes/lm/weights/char_lm.safetensors")

    def input_files(self) -> list[Path]:
        """The user's weights file (a server confines it to its model roots); the shipped one is none."""
        return [Path(self.weights).expanduser()] if self.weights else []

    def external_state(self) -> Any:
        """The weights file's size and mtime: retrained weights invalidate the cache."""
        return file_state(Path(self.weights) if self.weights else WEIGHTS)

    def run(self) -> LanguageModel:
        return load_char_lm(Path(self.weights) if self.weights else WEIGHTS)
