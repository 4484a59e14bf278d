"""A probabilistic grammar without recursion: literals, sequences and weighted choices over a DAG of
nodes, so every string's exact probability is a sum over its derivations (a PCFG inside pass,
Baker 1979) and every statistic of the language (entropy, length) is a finite recursion.

Semantics: Lit(b) derives b with probability 1; Seq(a, b, ...) the concatenation of independent
derivations; Choice((p1, a), (p2, b), ...) derives option k with probability p_k (sum p_k = 1).
For an unambiguous grammar (one derivation per string) the derivation entropy is the string
entropy; `Sample.logprob` (the derivation's) equals `logprob(string)` then, which tests check."""
from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Union

import torch

from ....graph.errors import NodeError


@dataclass(frozen=True, eq=False)
class Lit:
    """A literal byte string."""

    text: bytes


@dataclass(frozen=True, eq=False)
class Seq:
    """The concatenation of its parts' independent derivations."""

    parts: tuple[GNode, ...]


@dataclass(frozen=True, eq=False)
class Choice:
    """Option k with probability p_k; literal options are also kept in a table for fast parsing."""

    options: tuple[tuple[float, GNode], ...]
    _cum: tuple[float, ...] = field(init=False, repr=False)
    _lits: dict[bytes, float] = field(init=False, repr=False)  # literal text -> summed probability

    def __post_init__(self) -> None:
        total = sum(p for p, _ in self.options)
        if any(p <= 0 for p, _ in self.options) or abs(total - 1.0) > 1e-12:
            raise NodeError(f"a grammar choice needs positive probabilities summing to 1, got total {total!r}")
        cum = tuple(sum(p for p, _ in self.options[:k + 1]) for k in range(len(self.options)))
        lits: dict[bytes, float] = {}
        for p, o in self.options:
            if isinstance(o, Lit):
                lits[o.text] = lits.get(o.text, 0.0) + p
        object.__setattr__(self, "_cum", cum)
        object.__setattr__(self, "_lits", lits)


GNode = Union[Lit, Seq, Choice]


def lit(text: str) -> Lit:
    return Lit(text.encode("utf-8"))


def uniform(texts: list[str]) -> Choice:
    """A uniform choice among literal texts."""
    return Choice(tuple((1.0 / len(texts), lit(t)) for t in texts))


def weighted(options: list[tuple[float, GNode]]) -> Choice:
    """A choice with weights normalised to probabilities."""
    total = sum(w for w, _ in options)
    return Choice(tuple((w / total, o) for w, o in options))


def repeat(item: GNode, sep: GNode, counts: dict[int, float]) -> Choice:
    """item (sep item)^(n-1), n >= 1 drawn from `counts` (n -> probability)."""
    return Choice(tuple((p, Seq((item,) + (sep, item) * (n - 1))) for n, p in sorted(counts.items())))


def inside(node: GNode, s: bytes, start: int, memo: dict[tuple[int, int], dict[int, float]]) -> dict[int, float]:
    """{end: P(node derives s[start:end])}, summed over derivations (memoised per node and start)."""
    key = (id(node), start)
    if key in memo:
        return memo[key]
    out: dict[int, float] = {}
    if isinstance(node, Lit):
        if s.startswith(node.text, start):
            out[start + len(node.text)] = 1.0
    elif isinstance(node, Seq):
        out = {start: 1.0}
        for part in node.parts:
            nxt: dict[int, float] = {}
            for mid, p in out.items():
                for end, q in inside(part, s, mid, memo).items():
                    nxt[end] = nxt.get(end, 0.0) + p * q
            out = nxt
            if not out:
                break
    else:
        for text, p in node._lits.items():
            if s.startswith(text, start):
                out[start + len(text)] = out.get(start + len(text), 0.0) + p
        for p, option in node.options:
            if not isinstance(option, Lit):
                for end, q in inside(option, s, start, memo).items():
                    out[end] = out.get(end, 0.0) + p * q
    memo[key] = out
    return out


def logprob(node: GNode, s: bytes) -> float:
    """log P(node derives exactly s); -inf outside the language."""
    p = inside(node, s, 0, {}).get(len(s), 0.0)
    return math.log(p) if p > 0 else -math.inf


class Uniforms:
    """Uniforms in [0, 1) from a torch.Generator, drawn in blocks (one generator call per block)."""

    def __init__(self, gen: torch.Generator, block: int = 4096):
        self.gen, self.block, self.buf, self.i = gen, block, [], 0

    def next(self) -> float:
        if self.i == len(self.buf):
            self.buf, self.i = torch.rand(self.block, generator=self.gen, dtype=torch.float64).tolist(), 0
        self.i += 1
        return self.buf[self.i - 1]


@dataclass(frozen=True)
class Sample:
    """A sampled string with its derivation's log-probability."""

    text: bytes
    logprob: float


def sample(node: GNode, u: Uniforms) -> Sample:
    """One derivation drawn top-down (inverse-CDF choices), with its log-probability."""
    out, logp = bytearray(), 0.0
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Lit):
            out += n.text
        elif isinstance(n, Seq):
            stack.extend(reversed(n.parts))
        else:
            k = min(bisect.bisect_right(n._cum, u.next() * n._cum[-1]), len(n.options) - 1)
            p, option = n.options[k]
            logp += math.log(p)
            stack.append(option)
    return Sample(bytes(out), logp)


def derivations(node: GNode) -> Iterator[tuple[bytes, float]]:
    """Every derivation (text, probability) of a node, top-down: only for small sub-languages."""
    if isinstance(node, Lit):
        yield node.text, 1.0
    elif isinstance(node, Choice):
        for p, option in node.options:
            for text, q in derivations(option):
                yield text, p * q
    else:
        yield from _seq_derivations(node.parts)


def _seq_derivations(parts: tuple[GNode, ...]) -> Iterator[tuple[bytes, float]]:
    if not parts:
        yield b"", 1.0
        return
    for head, p in derivations(parts[0]):
        for tail, q in _seq_derivations(parts[1:]):
            yield head + tail, p * q


@dataclass(frozen=True)
class Stats:
    """Derivation entropy (nats), expected length, longest length, and the bytes a node can emit."""

    entropy: float
    mean_length: float
    max_length: int
    alphabet: frozenset[int]


def stats(node: GNode, memo: dict[int, Stats] | None = None) -> Stats:
    """Exact statistics by recursion over the DAG (Choice: H = -sum p log p + sum p H_k)."""
    memo = {} if memo is None else memo
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, Lit):
        out = Stats(0.0, float(len(node.text)), len(node.text), frozenset(node.text))
    else:
        kids = [stats(c, memo) for c in (node.parts if isinstance(node, Seq) else (o for _, o in node.options))]
        alphabet = frozenset().union(*(k.alphabet for k in kids))
        if isinstance(node, Seq):
            out = Stats(sum(k.entropy for k in kids), sum(k.mean_length for k in kids),
                        sum(k.max_length for k in kids), alphabet)
        else:
            ps = [p for p, _ in node.options]
            out = Stats(sum(p * (k.entropy - math.log(p)) for p, k in zip(ps, kids)),
                        sum(p * k.mean_length for p, k in zip(ps, kids)), max(k.max_length for k in kids), alphabet)
    memo[id(node)] = out
    return out
