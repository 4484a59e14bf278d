"""Exact enumeration of a small LanguageModel's sequences: the ground truth of the token tests."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import torch

from .model import LanguageModel


def enumerate_sequences(lm: LanguageModel, prompt: Sequence[int], max_new_tokens: int,
                        min_logp: float = -math.inf) -> dict[tuple[int, ...], float]:
    """log p of every generated id sequence (EOS included when it ends one) of at most max_new_tokens,
    breadth-first with one batched next_logprobs per depth; branches below min_logp are dropped. Each
    row's prompt length is the prompt's, so transforms that tell prompt from generated tokens
    (repetition penalties with include_prompt=False) see what lm.generate shows them."""
    out: dict[tuple[int, ...], float] = {}
    eos = lm.vocab.eos
    frontier: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
    for depth in range(max_new_tokens):
        if not frontier:
            break
        state = lm.start([list(prompt) + list(s) for s, _ in frontier], torch.arange(len(frontier)), 1)
        state = state.replace(prompt_length=torch.full_like(state.length, len(prompt)))  # the prefix is generated
        logp = lm.next_logprobs(state)[0][:, 0].to(torch.float64)  # (F, V)
        nxt = []
        for (seq, lp), row in zip(frontier, logp.tolist()):
            for tok, l in enumerate(row):
                total = lp + l
                if l == -math.inf or total < min_logp:
                    continue
                if tok in eos or depth == max_new_tokens - 1:
                    out[seq + (tok,)] = total
                else:
                    nxt.append((seq + (tok,), total))
        frontier = nxt
    return out


def text_distribution(lm: LanguageModel, seqs: dict[tuple[int, ...], float],
                      finished_only: bool = True) -> dict[bytes, float]:
    """Probabilities of decoded texts (summed over tokenisations) from enumerate_sequences' output."""
    dist: dict[bytes, float] = defaultdict(float)
    for seq, lp in seqs.items():
        if finished_only and not (seq and seq[-1] in lm.vocab.eos):
            continue
        dist[lm.vocab.decode(seq)] += math.exp(lp)
    return dict(dist)


def total_variation(p: dict, q: dict) -> float:
    """TV distance of two distributions given as dicts of probabilities."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def empirical(items: Sequence) -> dict:
    """Frequencies of hashable items."""
    counts: dict = defaultdict(float)
    for it in items:
        counts[it] += 1.0 / len(items)
    return dict(counts)

