"""HFLanguageModel: a transformers causal LM as a LanguageModel, with a KV cache per row (nodes/lm/kv_cache.py).

Each call feeds only the tokens the cache has not seen (never the whole prefix again), all rows in one
forward pass with explicit positions and a mask over empty cache columns, so rows of different lengths,
gathered, forked or cut back rows all share one batch. transformers is imported only when a model runs."""
from __future__ import annotations

import inspect
from typing import Any

import torch

from ...graph.errors import NodeError
from .kv_cache import Block, KVCache, attention_mask, plan_block
from .model import LanguageModel
from .state import TokenState
from .vocab import Vocabulary


class HFLanguageModel(LanguageModel):
    """Next-token log-probabilities of a transformers causal LM (LlamaForCausalLM and alike)."""

    def __init__(self, module: torch.nn.Module, tokenizer: Any, vocab: Vocabulary, max_length: int,
                 chat_template: bool = False):
        self.module = module.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.max_length = max_length
        self.chat_template = chat_template
        # transformers >= 5.24 names the cache argument `cache`, earlier versions `past_key_values`
        self.cache_arg = "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"
        self.dead = torch.tensor([i for i, b in enumerate(vocab.tokens) if i >= len(tokenizer)], dtype=torch.long)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt; with chat_template, of the text as a user turn followed by the assistant's cue."""
        if self.chat_template:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=not self.chat_template)["input_ids"])

    def next_logprobs(self, state: TokenState, window: int = 1) -> tuple[torch.Tensor, TokenState]:
        """(B, W, V) float32 log-probs after each row's last W prefixes; the cache then covers every token."""
        cache = state.cache
        if cache is not None and not isinstance(cache, KVCache):
            raise NodeError(f"this TokenState carries a {type(cache).__name__} of another model; give each model "
                            f"its own state")
        if window < 1 or bool((state.length < window).any()):
            raise NodeError(f"window={window} needs every row to hold at least {window} tokens "
                            f"(shortest: {int(state.length.min())})")
        block = plan_block(state, window, cache)
        if cache is not None:
            cache = cache.cut(block.start)
        logp, cache = self.forward(state, block, cache, window)
        return logp, state.replace(cache=cache, cached=state.length.clone())

    @torch.no_grad()  # not inference_mode: callers may edit the log-probs in place
    def forward(self, state: TokenState, block: Block, cache: KVCache | None,
                window: int) -> tuple[torch.Tensor, KVCache]:
        """Feed the block; the window's log-probs (B, W, V) and the cache extended by the block's columns."""
        b, dev = state.batch, self.device
        keep = min(window, block.width)
        if block.width == 0:  # nothing new: window 1 after a cut back to a length the cache has seen
            return cache.last[:, None], cache
        past = self.past(cache)
        full = (cache is None or bool((cache.pos >= 0).all())) and not block.padded
        mask = None if full else attention_mask(cache.pos if cache is not None else block.pos[:, :0], block.pos)
        out = self.module(input_ids=block.ids.to(dev), position_ids=block.pos.clamp(min=0).to(dev),
                          attention_mask=None if mask is None else mask.to(dev), use_cache=True,
                          logits_to_keep=keep, **{self.cache_arg: past})
        lp = self.logprobs(out.logits).to(state.device)  # (B, keep, V)
        if keep < window:
            lp = torch.cat([lp.new_zeros(b, window - keep, lp.shape[-1]), lp], dim=1)  # (B, W, V)
        last = lp[:, -1]  # (B, V)
        if cache is not None:  # rows that reuse the cached distribution put it first in their window
            first = torch.where(block.reuse_last[:, None], cache.last, lp[:, 0])
            lp = torch.cat([first[:, None], lp[:, 1:]], dim=1)
            fed = (block.pos >= 0).any(1)
            last = torch.where(fed[:, None], last, cache.last)
        layers = past.layers
        old = cache.pos if cache is not None else block.pos[:, :0]
        new = KVCache(tuple(layer.keys for layer in layers), tuple(layer.values for layer in layers),
                      torch.cat([old, block.pos], dim=1), state.length.clone(), last)
        return lp, new.compact() if new.wasteful() else new

    def logprobs(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, W, V) float32 log-softmax; ids the tokenizer does not have (padded embedding rows) get -inf."""
        logits = logits.float()
        if self.dead.numel():
            logits[..., self.dead.to(logits.device)] = -torch.inf
        return torch.log_softmax(logits, dim=-1)

    def past(self, cache: KVCache | None) -> Any:
        """A transformers DynamicCache over the cached keys/values (the forward pass appends to new tensors,
        so the KVCache the caller holds is never changed)."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        past = DynamicCache()
        if cache is None:
            return past
        for k, v in zip(cache.keys, cache.values):
            layer = DynamicLayer()
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
            past.layers.append(layer)
        return past
