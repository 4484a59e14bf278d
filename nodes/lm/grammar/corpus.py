"""The repo's synthetic language: short strings of four kinds, each from an unambiguous probabilistic
grammar (pcfg.py), so the exact probability of any string is known:

    date     1987-02-28           (19|20)DD-MM-DD, months uniform, days uniform within the month (Feb: 28)
    record   id=17;name=zoe;ok=true    1-3 key=value pairs joined by ';'
    arith    3+4*(12-5)           1-3 terms (a number, or a parenthesised 2-3 number expression)
    json     {"name": "ada", "age": 42}   a non-empty subset of the fields name, age, ok, tags, in that order

The kinds cannot be confused: a date starts with four digits and a '-' while numbers have at most
three digits; a record starts with a letter, a JSON object with '{'."""
from __future__ import annotations

import calendar
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .pcfg import Choice, GNode, Seq, Stats, Uniforms, lit, logprob, repeat, sample, stats, uniform, weighted

DIGITS = [str(d) for d in range(10)]
NAMES = ["ada", "bob", "eve", "ian", "kim", "lea", "max", "zoe"]
KINDS = {"date": 0.25, "record": 0.25, "arith": 0.25, "json": 0.25}
CENTURY = {"19": 0.3, "20": 0.7}
BOOL = {"true": 0.6, "false": 0.4}


def date() -> GNode:
    """YYYY-MM-DD with a day valid for its month (February always has 28 days)."""
    digit = uniform(DIGITS)
    year = Seq((weighted([(p, lit(c)) for c, p in CENTURY.items()]), digit, digit))
    months = [(1.0, Seq((lit(f"{m:02d}-"), uniform([f"{d:02d}" for d in range(1, days + 1)]))))
              for m, days in ((m, 28 if m == 2 else calendar.monthrange(2023, m)[1]) for m in range(1, 13))]
    return Seq((year, lit("-"), weighted(months)))


def number() -> GNode:
    """0..999 without leading zeros."""
    digit = uniform(DIGITS)
    more = weighted([(0.5, lit("")), (0.35, digit), (0.15, Seq((digit, digit)))])
    return weighted([(0.1, lit("0")), (0.9, Seq((uniform(DIGITS[1:]), more)))])


def boolean() -> GNode:
    return weighted([(p, lit(t)) for t, p in BOOL.items()])


def record(num: GNode, name: GNode, flag: GNode) -> GNode:
    """1-3 key=value pairs joined by ';'."""
    pair = weighted([(0.4, Seq((lit("id="), num))), (0.35, Seq((lit("name="), name))), (0.25, Seq((lit("ok="), flag)))])
    return repeat(pair, lit(";"), {1: 0.3, 2: 0.45, 3: 0.25})


def arith(num: GNode) -> GNode:
    """1-3 terms joined by + - * /; a term is a number or a parenthesised 2-3 number expression."""
    op = weighted([(0.35, lit("+")), (0.3, lit("-")), (0.25, lit("*")), (0.1, lit("/"))])
    inner = repeat(num, op, {2: 0.7, 3: 0.3})
    term = weighted([(0.8, num), (0.2, Seq((lit("("), inner, lit(")"))))])
    return repeat(term, op, {1: 0.3, 2: 0.45, 3: 0.25})


def json_object(num: GNode, name: GNode, flag: GNode) -> GNode:
    """{"name": ..., "age": ..., "ok": ..., "tags": [...]}: each field kept with its own probability
    (conditioned on at least one), in this order."""
    quoted = Seq((lit('"'), name, lit('"')))
    tags = Seq((lit("["), weighted([(0.3, lit("")), (0.4, quoted), (0.3, Seq((quoted, lit(", "), quoted)))]), lit("]")))
    fields = [(0.8, Seq((lit('"name": '), quoted))), (0.6, Seq((lit('"age": '), num))),
              (0.4, Seq((lit('"ok": '), flag))), (0.3, Seq((lit('"tags": '), tags)))]
    subsets = []
    for keep in itertools.product((False, True), repeat=len(fields)):
        if any(keep):
            weight = math.prod(p if k else 1 - p for k, (p, _) in zip(keep, fields))
            parts = [f for k, (_, f) in zip(keep, fields) if k]
            body = parts[:1] + [x for f in parts[1:] for x in (lit(", "), f)]
            subsets.append((weight, Seq(tuple(body))))
    return Seq((lit("{"), weighted(subsets), lit("}")))


@dataclass(frozen=True)
class Corpus:
    """The language: its start node and one node per kind (sub-languages for tests)."""

    start: Choice
    kinds: dict[str, GNode]

    def logprob(self, s: bytes) -> float:
        """Exact log P(s) under the grammar; -inf when s is not in the language."""
        return logprob(self.start, s)

    def sample(self, gen: torch.Generator, n: int) -> list[bytes]:
        """n independent strings drawn with the generator's uniforms."""
        u = Uniforms(gen)
        return [sample(self.start, u).text for _ in range(n)]

    def stats(self) -> Stats:
        return stats(self.start)

    def entropy_per_char(self) -> float:
        """H(X) / E[|X| + 1] nats: the per-token entropy of strings each followed by an end token."""
        st = self.stats()
        return st.entropy / (st.mean_length + 1)

    def alphabet(self) -> bytes:
        """Every byte the language uses, sorted."""
        return bytes(sorted(self.stats().alphabet))

    def strings(self, kind: str) -> Iterator[tuple[bytes, float]]:
        """Every derivation of one kind's sub-language with its probability within that kind."""
        from .pcfg import derivations
        return derivations(self.kinds[kind])


def corpus() -> Corpus:
    """The repo's grammar (build once and keep: nodes are compared by identity)."""
    num, name, flag = number(), uniform(NAMES), boolean()
    kinds = {"date": date(), "record": record(num, name, flag), "arith": arith(num),
             "json": json_object(num, name, flag)}
    return Corpus(start=weighted([(KINDS[k], kinds[k]) for k in KINDS]), kinds=kinds)
