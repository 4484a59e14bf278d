"""A regex as a byte DFA: Thompson's construction (Thompson 1968) of a byte NFA from the parsed pattern (characters
as their UTF-8 byte sequences), then the subset construction (Rabin and Scott 1959) done lazily; NFA states that
cannot reach the accepting state are pruned from every subset, so every DFA state but DEAD is live."""
from __future__ import annotations

from collections.abc import Hashable

from .automaton import LazyDFA
from .regex_syntax import Alt, CharSet, Concat, Node, RegexSyntaxError, Repeat, parse
from .utf8 import utf8_sequences

MAX_NFA_STATES = 200_000


class ByteNFA:
    """States with epsilon edges and inclusive byte-range edges; built by `fragment`."""

    def __init__(self) -> None:
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[int, int, int]]] = []  # (lo, hi, target)

    def new(self) -> int:
        if len(self.eps) >= MAX_NFA_STATES:
            raise RegexSyntaxError(f"the pattern needs more than {MAX_NFA_STATES} automaton states", 0)
        self.eps.append([])
        self.edges.append([])
        return len(self.eps) - 1

    def fragment(self, node: Node) -> tuple[int, int]:
        """(start, end) states of a sub-automaton for node."""
        if isinstance(node, CharSet):
            return self.char_set(node)
        if isinstance(node, Concat):
            start = cur = self.new()
            for item in node.items:
                s, e = self.fragment(item)
                self.eps[cur].append(s)
                cur = e
            return start, cur
        if isinstance(node, Alt):
            start, end = self.new(), self.new()
            for option in node.options:
                s, e = self.fragment(option)
                self.eps[start].append(s)
                self.eps[e].append(end)
            return start, end
        return self.repeat(node)

    def char_set(self, node: CharSet) -> tuple[int, int]:
        start, end = self.new(), self.new()
        for lo, hi in node.ranges:
            for seq in utf8_sequences(lo, hi):
                cur = start
                for k, (blo, bhi) in enumerate(seq):
                    nxt = end if k == len(seq) - 1 else self.new()
                    self.edges[cur].append((blo, bhi, nxt))
                    cur = nxt
        return start, end

    def trie(self, words: list[bytes]) -> tuple[int, int]:
        """(start, end) of a byte trie of the words: shared prefixes share states (deterministic below start)."""
        start, end = self.new(), self.new()
        children: dict[tuple[int, int], int] = {}
        for word in words:
            cur = start
            for b in word:
                nxt = children.get((cur, b))
                if nxt is None:
                    nxt = children[(cur, b)] = self.new()
                    self.edges[cur].append((b, b, nxt))
                cur = nxt
            if end not in self.eps[cur]:
                self.eps[cur].append(end)
        return start, end

    def literal(self, data: bytes) -> tuple[int, int]:
        """(start, end) reading exactly data."""
        return self.trie([data])

    def chain(self, *parts: tuple[int, int]) -> tuple[int, int]:
        """Fragments one after another (each used once)."""
        for (_, e), (s, _) in zip(parts, parts[1:]):
            self.eps[e].append(s)
        return parts[0][0], parts[-1][1]

    def star(self, part: tuple[int, int]) -> tuple[int, int]:
        """Zero or more of a fragment (used once)."""
        loop = self.new()
        self.eps[loop].append(part[0])
        self.eps[part[1]].append(loop)
        return loop, loop

    def repeat(self, node: Repeat) -> tuple[int, int]:
        start = cur = self.new()
        for _ in range(node.low):
            s, e = self.fragment(node.item)
            self.eps[cur].append(s)
            cur = e
        if node.high is None:
            loop = self.new()
            s, e = self.fragment(node.item)
            self.eps[cur].append(loop)
            self.eps[loop].append(s)
            self.eps[e].append(loop)
            return start, loop
        end = self.new()
        for _ in range(node.high - node.low):
            s, e = self.fragment(node.item)
            self.eps[cur] += [end, s]
            cur = e
        self.eps[cur].append(end)
        return start, end

    def co_reachable(self, accept: int) -> list[bool]:
        """Which states can reach `accept` (reverse search over both kinds of edges)."""
        back: list[list[int]] = [[] for _ in self.eps]
        for s, (eps, edges) in enumerate(zip(self.eps, self.edges)):
            for t in eps:
                back[t].append(s)
            for _, _, t in edges:
                back[t].append(s)
        live, todo = [False] * len(self.eps), [accept]
        live[accept] = True
        while todo:
            for s in back[todo.pop()]:
                if not live[s]:
                    live[s] = True
                    todo.append(s)
        return live


class SubsetDFA(LazyDFA):
    """The DFA of a byte NFA from `initial` to `accept`, determinised on demand."""

    def __init__(self, nfa: ByteNFA, initial: int, accept: int):
        self.nfa, self.initial, self.accept = nfa, initial, accept
        self.live = nfa.co_reachable(accept)
        super().__init__()

    def closure(self, states: set[int] | list[int]) -> frozenset[int] | None:
        """The epsilon closure, kept to live states that read a byte or accept (None if empty)."""
        seen, todo = set(states), list(states)
        while todo:
            for t in self.nfa.eps[todo.pop()]:
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        kept = frozenset(s for s in seen if self.live[s] and (self.nfa.edges[s] or s == self.accept))
        return kept or None

    def start_key(self) -> Hashable | None:
        return self.closure([self.initial])

    def accepts(self, key: Hashable) -> bool:
        return self.accept in key  # type: ignore[operator]

    def successors(self, key: Hashable) -> list[tuple[int, int, Hashable | None]]:
        edges = [e for s in key for e in self.nfa.edges[s]]  # type: ignore[union-attr]
        cuts = sorted({0, 256, *(lo for lo, _, _ in edges), *(hi + 1 for _, hi, _ in edges)})
        out = []
        for lo, nxt in zip(cuts, cuts[1:]):  # bytes lo..nxt-1 behave alike
            targets = {t for a, b, t in edges if a <= lo <= b}
            if targets:
                out.append((lo, nxt - 1, self.closure(targets)))
        return out


class RegexDFA(SubsetDFA):
    """The DFA of a whole-text regex over UTF-8 bytes (syntax: nodes/lm/constraints/regex_syntax.py)."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        nfa = ByteNFA()
        super().__init__(nfa, *nfa.fragment(parse(pattern)))
