"""Exact references for the constrained token samplers, by enumeration on small table LMs: byte predicates as
Potentials, the local normaliser Z_local(prefix) = sum_t p(t | prefix) c(prefix t), the global target
p(x) c(x) / Z over texts of at most T tokens (EOS included), and the distribution of locally constrained
decoding (the product of local normalised steps), which is not the global target."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch

from samplegraph.nodes.lm.exact import enumerate_sequences
from samplegraph.nodes.lm.model import LanguageModel
from samplegraph.nodes.lm.potential import Potential
from samplegraph.nodes.lm.state import TokenState
from samplegraph.nodes.lm.table_lm import TableLM, table_of


class Predicate(Potential):
    """A boolean constraint from two byte predicates (prefix: can still be completed; complete: accepted)."""

    def __init__(self, prefix_ok: Callable[[bytes], bool], complete_ok: Callable[[bytes], bool]):
        self.prefix_ok, self.complete_ok = prefix_ok, complete_ok

    def prefix(self, texts: Sequence[bytes]) -> torch.Tensor:
        return torch.tensor([0.0 if self.prefix_ok(t) else -math.inf for t in texts], dtype=torch.float64)

    def complete(self, texts: Sequence[bytes]) -> torch.Tensor:
        return torch.tensor([0.0 if self.complete_ok(t) else -math.inf for t in texts], dtype=torch.float64)


class Soft(Potential):
    """A weighted potential: log phi = -0.7 per 'b' byte (prefix and complete alike), 0 elsewhere."""

    def prefix(self, texts: Sequence[bytes]) -> torch.Tensor:
        return torch.tensor([-0.7 * t.count(b"b") for t in texts], dtype=torch.float64)

    def complete(self, texts: Sequence[bytes]) -> torch.Tensor:
        return self.prefix(texts)


# texts over {a, b} with no "bb" that end in "a"
NO_BB_ENDS_A = Predicate(lambda t: b"bb" not in t, lambda t: b"bb" not in t and t.endswith(b"a"))


def trap_lm() -> TableLM:
    """The motivating case: 'b' is the likely first token, and after 'b' the LM wants another 'b' (forbidden),
    so locally constrained decoding follows 'b' into completions the LM gives little mass."""
    start = [0.3, 0.6, 0.05, 0.05]  # a, b, ab, EOS
    rows = [[0.1, 0.2, 0.1, 0.6],  # after a
            [0.03, 0.9, 0.02, 0.05],  # after b
            [0.4, 0.2, 0.1, 0.3]]  # after ab
    return TableLM(["a", "b", "ab"], table_of(3, start, rows), 64)


def random_lm(n_tokens: int, seed: int) -> TableLM:
    """Single-character tokens 'a', 'b', ... with Dirichlet(1) rows (EOS last), from a fixed generator."""
    g = torch.Generator().manual_seed(seed)
    rows = -torch.log(torch.rand(n_tokens + 1, n_tokens + 1, generator=g, dtype=torch.float64))  # Exp(1)
    rows = (rows / rows.sum(-1, keepdim=True)).tolist()  # normalised exponentials: Dirichlet(1)
    return TableLM([chr(ord("a") + i) for i in range(n_tokens)], table_of(n_tokens, rows[-1], rows[:-1]), 64)


def rows_after(lm: LanguageModel, generated: Sequence[int], n: int, first_particle: int = 0) -> TokenState:
    """n rows of the empty prompt (BOS) followed by the generated ids, room for 4 more tokens."""
    state = lm.start([lm.encode("")] * n, torch.arange(first_particle, first_particle + n), len(generated) + 4)
    for t in generated:
        state = state.append(torch.full((n,), t, dtype=torch.long))
    return state


def local_distribution(lm: LanguageModel, potential: Potential, generated: Sequence[int]) -> tuple[torch.Tensor, float]:
    """The exact p(t | x) c(x t) / Z_local (V,) after the generated ids x, and Z_local; c is asked per text."""
    state = rows_after(lm, generated, 1)
    p = lm.next_logprobs(state)[0][0, 0].to(torch.float64).exp()  # (V,)
    text = lm.vocab.decode(generated)
    c = torch.cat([potential.complete([text]) if t in lm.vocab.eos else potential.prefix([text + lm.vocab.tokens[t]])
                   for t in range(lm.vocab.size)]).exp()  # (V,)
    z = float((p * c).sum())
    return p * c / z, z


def global_target(lm: LanguageModel, potential: Potential, max_tokens: int, prompt: str = "") -> tuple[dict, float]:
    """p(x) c(x) / Z over finished texts of at most max_tokens tokens (EOS included), and Z."""
    dist: dict[bytes, float] = defaultdict(float)
    for seq, lp in enumerate_sequences(lm, lm.encode(prompt), max_tokens).items():
        if seq[-1] in lm.vocab.eos:
            text = lm.vocab.decode(seq)
            dist[text] += math.exp(lp + float(potential.complete([text])[0]))
    z = sum(dist.values())
    return {t: w / z for t, w in dist.items() if w > 0}, z


def locally_constrained(lm: LanguageModel, potential: Potential, max_tokens: int) -> dict:
    """The texts of locally constrained decoding (each token from p c / Z_local, EOS forced at the budget),
    conditioned on finishing: what AWRS or masking draw when their weights are ignored."""
    out: dict[bytes, float] = defaultdict(float)
    frontier = [((), 1.0)]
    for depth in range(max_tokens):
        nxt = []
        for seq, q in frontier:
            text = lm.vocab.decode(seq)
            if depth == max_tokens - 1:  # the budget forces EOS: the row finishes if EOS is valid, else dies
                out[text] += q * math.exp(float(potential.complete([text])[0]))
                continue
            local, _ = local_distribution(lm, potential, seq)
            for t, w in enumerate(local.tolist()):
                if w > 0 and t in lm.vocab.eos:
                    out[text] += q * w
                elif w > 0:
                    nxt.append((seq + (t,), q * w))
        frontier = nxt
    total = sum(out.values())
    return {t: w / total for t, w in out.items() if w > 0}


def weighted_texts(texts: Sequence[str], log_w: torch.Tensor) -> dict:
    """The self-normalised weighted distribution of texts (empty when every weight is -inf)."""
    if not bool(torch.isfinite(log_w).any()):
        return {}
    dist: dict[bytes, float] = defaultdict(float)
    for t, w in zip(texts, torch.softmax(log_w.to(torch.float64), 0).tolist()):
        dist[t.encode()] += w
    return dict(dist)
