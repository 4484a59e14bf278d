"""Text-quality scores of generated strings, usable by metric nodes and benchmarks (functions of texts):
exact grammar log-likelihoods and validity (the corpus is synthetic, so its distribution is known),
generative perplexity under an autoregressive LM (the field's usual metric, e.g. Sahoo et al. 2024,
Zheng et al. 2024), per-sample unigram entropy (Zheng et al. 2024: low values expose the float32
sampling bug), distinct fraction, and the fraction matching a regex."""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import torch

from ...graph.errors import NodeError
from ..lm.grammar import Corpus
from ..lm.model import LanguageModel
from ..lm.state import TokenState


def grammar_logprobs(texts: Sequence[str], lang: Corpus) -> list[float]:
    """Exact log P(text) under the grammar for each text (-inf outside the language)."""
    return [lang.logprob(t.encode("utf-8")) for t in texts]


def valid_fraction(logprobs: Sequence[float]) -> float:
    """Fraction of texts inside the language (finite log-probability)."""
    return sum(math.isfinite(v) for v in logprobs) / max(len(logprobs), 1)


def mean_valid_logprob(logprobs: Sequence[float]) -> float:
    """Mean log-probability of the texts inside the language (nan when none is)."""
    good = [v for v in logprobs if math.isfinite(v)]
    return sum(good) / len(good) if good else math.nan


def lm_nll(lm: LanguageModel, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) float64 -log p_LM(text, then an end token) and (N,) int64 token counts (end token included),
    scored after the LM's own empty prompt `lm.encode('')` (the char LM's BOS); one batched call per
    distinct length."""
    prefix = lm.encode("")
    if not prefix:
        raise NodeError("the language model encodes the empty text as no token: perplexity needs a start token "
                        "(e.g. BOS) to condition the first token on")
    rows = [lm.encode(t) for t in texts]
    for i, r in enumerate(rows):
        if r[:len(prefix)] != prefix:
            raise NodeError(f"text {i} ({texts[i]!r}) does not encode after the model's start tokens {prefix}")
    eos = torch.tensor(sorted(lm.vocab.eos), dtype=torch.long)
    nll = torch.zeros(len(rows), dtype=torch.float64)
    for n in sorted({len(r) for r in rows}):
        idx = [i for i, r in enumerate(rows) if len(r) == n]
        window = n - len(prefix) + 1  # distributions of the text's tokens, then of the end
        state = TokenState.from_prompts([rows[i] for i in idx], torch.arange(len(idx)), n)
        logp = lm.next_logprobs(state, window)[0].to(torch.float64).cpu()  # (b, W, V)
        target = torch.tensor([rows[i][len(prefix):] for i in idx], dtype=torch.long).reshape(len(idx), window - 1)
        text_lp = logp[:, :-1].gather(-1, target[..., None])[..., 0].sum(-1)  # (b,)
        end_lp = logp[:, -1, eos].logsumexp(-1)  # (b,)
        nll[idx] = -(text_lp + end_lp)
    tokens = torch.tensor([len(r) - len(prefix) + 1 for r in rows], dtype=torch.long)
    return nll, tokens


def perplexity(nll: torch.Tensor, tokens: torch.Tensor) -> float:
    """exp(total NLL / total tokens): generative perplexity pooled over the samples."""
    return math.exp(float(nll.sum()) / max(int(tokens.sum()), 1))


def unigram_entropy(text: str) -> float:
    """Entropy (nats) of the empirical distribution of a text's tokens, here its bytes (the characters
    of the character models); 0 for an empty text (Zheng et al. 2024's per-sample entropy)."""
    data = text.encode("utf-8")
    if not data:
        return 0.0
    counts = torch.tensor(list(Counter(data).values()), dtype=torch.float64)
    p = counts / counts.sum()
    return float(-(p * p.log()).sum())


def mean_entropy(texts: Sequence[str]) -> float:
    """Per-sample unigram entropy averaged over the samples."""
    return sum(unigram_entropy(t) for t in texts) / max(len(texts), 1)


def distinct_fraction(texts: Sequence[str]) -> float:
    """Distinct texts / texts."""
    return len(set(texts)) / max(len(texts), 1)


def regex_fraction(texts: Sequence[str], pattern: str) -> float:
    """Fraction of texts that match `pattern` in full (Python re)."""
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise NodeError(f"'constraint' is not a valid regular expression ({e})") from None
    return sum(rx.fullmatch(t) is not None for t in texts) / max(len(texts), 1)
