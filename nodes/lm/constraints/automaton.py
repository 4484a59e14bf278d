"""Byte automata as constraints: a lazily built DFA over bytes whose states are all live (every state but DEAD can
still reach an accepting one), so partial-match semantics is "the walk did not die" (docs/ARCHITECTURE.md,
"Tokens"). `AutomatonPotential` is the byte-level Potential; bound to a vocabulary it keeps each row's DFA state
keyed by the row's generated token ids, so extending a row walks only the new token's bytes, and it computes
the full mask of a DFA state once, over all tokens at once (a vectorised walk of the vocabulary's bytes)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Hashable, Sequence

import numpy as np
import torch

from ....graph.errors import NodeError
from ..potential import NEG_INF, Potential, TokenPotential
from ..state import TokenState
from ..vocab import Vocabulary

DEAD = 0  # the sink: no completion reaches an accepting state
MAX_STATES = 200_000
ROW_CACHE = 65_536  # rows' DFA states remembered per bound potential
MASK_CACHE = 1_024  # full masks remembered per bound potential (one per DFA state)


class LazyDFA(ABC):
    """A DFA over bytes discovered on demand: subclasses name states by hashable keys (None = dead) and list
    each key's successors; states get small int ids, their 256-entry transition rows are built when first used."""

    def __init__(self) -> None:
        self._ids: dict[Hashable, int] = {}
        self._accepting: list[bool] = [False]
        self._key: list[Hashable | None] = [None]
        self._table = np.zeros((64, 256), dtype=np.int32)  # (capacity, 256) next state per byte
        self._built = np.zeros(64, dtype=bool)
        self._built[DEAD] = True
        self.start = self.state_of(self.start_key())

    @abstractmethod
    def start_key(self) -> Hashable | None:
        """The key of the start state (None: the language is empty)."""

    @abstractmethod
    def successors(self, key: Hashable) -> list[tuple[int, int, Hashable | None]]:
        """(lo, hi, key) for inclusive byte ranges; bytes not listed lead to DEAD."""

    @abstractmethod
    def accepts(self, key: Hashable) -> bool:
        """Whether the state of this key ends a complete match."""

    @property
    def states(self) -> int:
        return len(self._key)

    def state_of(self, key: Hashable | None) -> int:
        """The id of a key's state, made on first sight."""
        if key is None:
            return DEAD
        found = self._ids.get(key)
        if found is not None:
            return found
        n = len(self._key)
        if n >= MAX_STATES:
            raise NodeError(f"the constraint's automaton grew past {MAX_STATES} states; simplify the pattern")
        if n >= self._table.shape[0]:
            self._table = np.concatenate([self._table, np.zeros_like(self._table)])
            self._built = np.concatenate([self._built, np.zeros_like(self._built)])
        self._ids[key] = n
        self._key.append(key)
        self._accepting.append(self.accepts(key))
        return n

    def build(self, state: int) -> None:
        """Fill the transition row of a state."""
        if self._built[state]:
            return
        row = np.zeros(256, dtype=np.int32)
        for lo, hi, key in self.successors(self._key[state]):
            row[lo:hi + 1] = self.state_of(key)
        self._table[state] = row
        self._built[state] = True

    def accepting(self, state: int) -> bool:
        return self._accepting[state]

    def walk(self, state: int, data: bytes) -> int:
        """The state after reading data from state (DEAD once dead)."""
        for b in data:
            if state == DEAD:
                return DEAD
            self.build(state)
            state = int(self._table[state, b])
        return state

    def walk_many(self, state: int, table: VocabTable) -> np.ndarray:
        """(M,) int32 state after each of table's tokens from `state`, all tokens at once (longest first)."""
        cur = np.full(table.count, state, dtype=np.int32)  # (M,)
        for j, n in enumerate(table.live_at):
            head = cur[:n]
            for s in np.unique(head).tolist():
                self.build(s)
            cur[:n] = self._table[head, table.data[:n, j]]
        return cur


class VocabTable:
    """The non-EOS tokens of a vocabulary as a byte matrix, longest first, for walking all tokens at once."""

    def __init__(self, vocab: Vocabulary):
        ids = [i for i in range(vocab.size) if i not in vocab.eos]
        ids.sort(key=lambda i: -len(vocab.tokens[i]))
        width = max((len(vocab.tokens[i]) for i in ids), default=0)
        self.ids = np.array(ids, dtype=np.int64)  # (M,)
        self.count = len(ids)
        self.data = np.zeros((self.count, max(width, 1)), dtype=np.uint8)  # (M, Lmax)
        lengths = np.array([len(vocab.tokens[i]) for i in ids], dtype=np.int64)
        for r, i in enumerate(ids):
            self.data[r, :lengths[r]] = np.frombuffer(vocab.tokens[i], dtype=np.uint8)
        self.live_at = [int((lengths > j).sum()) for j in range(width)]  # tokens longer than j, a prefix of rows


def verdict(ok: Sequence[bool]) -> torch.Tensor:
    """(N,) float64: 0 where ok, -inf elsewhere."""
    return torch.tensor([0.0 if o else NEG_INF for o in ok], dtype=torch.float64)


class AutomatonPotential(Potential):
    """A boolean constraint given by a byte DFA: a prefix is valid iff its walk is not dead, a text is
    complete iff its walk ends in an accepting state."""

    def __init__(self, dfa: LazyDFA):
        self.dfa = dfa

    def prefix(self, texts: Sequence[bytes]) -> torch.Tensor:
        return verdict([self.dfa.walk(self.dfa.start, t) != DEAD for t in texts])

    def complete(self, texts: Sequence[bytes]) -> torch.Tensor:
        return verdict([self.dfa.accepting(self.dfa.walk(self.dfa.start, t)) for t in texts])

    def bind(self, vocab: Vocabulary) -> TokenPotential:
        return AutomatonTokenPotential(self.dfa, vocab)


class AutomatonTokenPotential(TokenPotential):
    """A byte DFA seen through a vocabulary: rows' states cached by generated token ids (LRU), masks by DFA state."""

    def __init__(self, dfa: LazyDFA, vocab: Vocabulary):
        self.dfa, self.vocab = dfa, vocab
        self.bytes_of = [b"" if i in vocab.eos else t for i, t in enumerate(vocab.tokens)]  # EOS reads nothing
        self.eos_ids = torch.tensor(sorted(vocab.eos), dtype=torch.long)
        self._table: VocabTable | None = None
        self._rows: OrderedDict[tuple[int, ...], int] = OrderedDict()
        self._masks: OrderedDict[int, tuple[np.ndarray, torch.Tensor]] = OrderedDict()

    def row_state(self, ids: tuple[int, ...]) -> int:
        """The DFA state after a row's generated ids (its parent's state extended by the last token, if cached)."""
        found = self._rows.get(ids)
        if found is not None:
            self._rows.move_to_end(ids)
            return found
        parent = self._rows.get(ids[:-1]) if ids else None
        if parent is not None:
            state = self.extend(parent, ids[-1])
        else:
            state = self.dfa.walk(self.dfa.start, b"".join(self.bytes_of[i] for i in ids))
        self._rows[ids] = state
        if len(self._rows) > ROW_CACHE:
            self._rows.popitem(last=False)
        return state

    def extend(self, state: int, token: int) -> int:
        """The state after one more token (from the state's cached mask walk when there is one)."""
        cached = self._masks.get(state)
        if cached is not None and token not in self.vocab.eos:
            return int(cached[0][token])
        return self.dfa.walk(state, self.bytes_of[token])

    def candidates(self, state: TokenState, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        at = {r: self.row_state(tuple(state.generated(r))) for r in rows.unique().tolist()}
        ok = []
        for r, t in zip(rows.tolist(), tokens.tolist()):
            s = at[r]
            ok.append(self.dfa.accepting(s) if t in self.vocab.eos else self.extend(s, t) != DEAD)
        return verdict(ok)

    def mask(self, state: TokenState) -> torch.Tensor:
        return torch.stack([self.state_mask(self.row_state(tuple(state.generated(r))))[1]
                            for r in range(state.batch)])  # (B, V)

    def state_mask(self, s: int) -> tuple[np.ndarray, torch.Tensor]:
        """(V,) next state per token and (V,) float64 log-weight mask of one DFA state (cached, LRU)."""
        found = self._masks.get(s)
        if found is not None:
            self._masks.move_to_end(s)
            return found
        if self._table is None:
            self._table = VocabTable(self.vocab)
        nxt = np.zeros(self.vocab.size, dtype=np.int32)  # (V,)
        if s != DEAD:
            nxt[self._table.ids] = self.dfa.walk_many(s, self._table)
        logw = torch.where(torch.from_numpy(nxt != DEAD), 0.0, NEG_INF).to(torch.float64)  # (V,)
        logw[self.eos_ids] = 0.0 if self.dfa.accepting(s) else NEG_INF
        self._masks[s] = (nxt, logw)
        if len(self._masks) > MASK_CACHE:
            self._masks.popitem(last=False)
        return nxt, logw

    def prefix_texts(self, texts: Sequence[bytes]) -> torch.Tensor:
        return AutomatonPotential(self.dfa).prefix(texts)

    def complete_texts(self, texts: Sequence[bytes]) -> torch.Tensor:
        return AutomatonPotential(self.dfa).complete(texts)
