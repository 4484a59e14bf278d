"""Grammar constraints through llguidance (Moskal et al. 2025, "llguidance: fast structured output", the engine of
guidance): a Lark grammar (JSON schemas enter it as `%json {...}`) compiled once, checked at node run time.

Byte semantics: llguidance by default forces grammar-determined bytes as the canonical tokens of a tokenizer;
here `no_forcing` is set, so the allowed set of a row is exactly the tokens whose bytes keep its text a valid
prefix (what AWRS and the exact local normaliser need), whatever tokenisation the LM chose. Byte-level
`prefix` / `complete` on texts run the same grammar over llguidance's single-byte tokenizer; bound to a
vocabulary, an llguidance tokenizer is built from the tokens' bytes and EOS ids, and each row keeps a matcher
keyed by its generated token ids (LRU), advanced from its parent's by one token, never re-parsed."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ....graph.errors import NodeError
from ..potential import NEG_INF, Potential, TokenPotential
from ..state import TokenState
from ..vocab import Vocabulary
from .automaton import verdict

NO_FORCING = '\n%llguidance {"no_forcing": true}\n'  # byte semantics (module doc); appended so line numbers hold
MATCHER_CACHE = 4_096  # rows' matchers remembered per bound potential


def llguidance() -> Any:
    """The llguidance module, or a NodeError saying how to install it."""
    try:
        import llguidance as llg
    except ImportError:
        raise NodeError("grammar constraints need llguidance: pip install 'samplegraph[lm]'") from None
    return llg


def checked_grammar(lark: str, what: str) -> str:
    """The Lark grammar with byte semantics, or a NodeError naming `what` (the parameter) with llguidance's
    located message."""
    grammar = lark + NO_FORCING
    failed, messages = llguidance().LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise NodeError(f"{what}: {messages[0].strip()}")
    return grammar


class GrammarPotential(Potential):
    """A boolean constraint of an llguidance grammar on byte strings."""

    def __init__(self, grammar: str):
        self.grammar = grammar
        self._byte_root: Any = None
        self._bound: dict[int, tuple[Vocabulary, GrammarTokenPotential]] = {}

    def byte_matcher(self, text: bytes) -> Any:
        """A matcher over single bytes that has read text (in its error state if text is no valid prefix)."""
        if self._byte_root is None:  # compiled once; every text starts from a copy
            llg = llguidance()
            self._byte_root = llg.LLMatcher(llg.LLTokenizer("byte"), self.grammar, log_level=0)
        m = self._byte_root.deep_copy()
        m.consume_tokens(list(text))
        return m

    def prefix(self, texts: Sequence[bytes]) -> torch.Tensor:
        return verdict([not self.byte_matcher(t).is_error() for t in texts])

    def complete(self, texts: Sequence[bytes]) -> torch.Tensor:
        ok = []
        for t in texts:
            m = self.byte_matcher(t)
            ok.append(not m.is_error() and m.is_accepting())
        return verdict(ok)

    def bind(self, vocab: Vocabulary) -> TokenPotential:
        """The grammar over a vocabulary; the llguidance tokenizer (~1 s for 50k tokens) is built once per vocabulary."""
        found = self._bound.get(id(vocab))
        if found is None or found[0] is not vocab:
            found = (vocab, GrammarTokenPotential(self, vocab))
            self._bound[id(vocab)] = found
        return found[1]


class VocabEncoder:
    """What llguidance's TokenizerWrapper needs of a tokenizer: each token's bytes (EOS ids as special tokens) and
    an encoder, here greedy longest match (used only to force bytes, which byte semantics switches off)."""

    def __init__(self, vocab: Vocabulary):
        self.eos_token_id = min(vocab.eos)
        self.bos_token_id = None
        self.tokens = [b"\xff[eos%d]" % i if i in vocab.eos else (t or b"\xff[empty%d]" % i)
                       for i, t in enumerate(vocab.tokens)]
        self.special_token_ids = sorted(vocab.eos)
        self.index = {t: i for i, t in reversed(list(enumerate(self.tokens)))}
        self.longest = max(len(t) for t in self.tokens)

    def __call__(self, text: bytes | str) -> list[int]:
        data = text.encode() if isinstance(text, str) else text
        out, i = [], 0
        while i < len(data):
            for n in range(min(self.longest, len(data) - i), 0, -1):
                found = self.index.get(data[i:i + n])
                if found is not None:
                    out.append(found)
                    i += n
                    break
            else:  # a byte no token spells: skipped (llguidance must not see an exception here)
                i += 1
        return out


class GrammarTokenPotential(TokenPotential):
    """An llguidance grammar over a vocabulary: per-candidate checks and exact masks from per-row matchers."""

    def __init__(self, potential: GrammarPotential, vocab: Vocabulary):
        llg = llguidance()
        self.potential, self.vocab, self.llg = potential, vocab, llg
        self.tokenizer = llg.LLTokenizer(llg.TokenizerWrapper(VocabEncoder(vocab)), n_vocab=vocab.size,
                                         eos_token=sorted(vocab.eos))
        empty = [i for i, t in enumerate(vocab.tokens) if not t and i not in vocab.eos]
        self.empty = torch.tensor(empty, dtype=torch.long)  # non-EOS tokens of no bytes keep a valid prefix valid
        self.eos = torch.tensor(sorted(vocab.eos), dtype=torch.long)
        self.skip = frozenset(empty)  # never shown to llguidance (it sees them as special tokens)
        self.root = llg.LLMatcher(self.tokenizer, potential.grammar, log_level=0)  # compiled once, then copied
        self._rows: OrderedDict[tuple[int, ...], tuple[Any, torch.Tensor | None]] = OrderedDict()

    def matcher(self, ids: tuple[int, ...]) -> Any:
        """The matcher that has read a row's generated ids (from its parent's when cached), None if they are invalid."""
        found = self._rows.get(ids)
        if found is not None:
            self._rows.move_to_end(ids)
            return found[0]
        parent = self._rows.get(ids[:-1]) if ids else None
        if parent is not None and parent[0] is not None:
            m = parent[0].deep_copy()
            if ids[-1] not in self.skip:
                m.consume_token(ids[-1])
        else:
            m = self.root.deep_copy()
            m.consume_tokens([i for i in ids if i not in self.skip])
        m = None if m.is_error() else m
        self.remember(ids, m, None)
        return m

    def remember(self, ids: tuple[int, ...], m: Any, mask: torch.Tensor | None) -> None:
        self._rows[ids] = (m, mask)
        if len(self._rows) > MATCHER_CACHE:
            self._rows.popitem(last=False)

    def candidates(self, state: TokenState, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        at = {r: self.matcher(tuple(state.generated(r))) for r in rows.unique().tolist()}
        ok = []
        for r, t in zip(rows.tolist(), tokens.tolist()):
            m = at[r]
            if m is None:
                ok.append(False)
            elif t in self.vocab.eos:
                ok.append(m.is_accepting())
            else:
                ok.append(not self.vocab.tokens[t] or m.validate_tokens([t]) == 1)
        return verdict(ok)

    def mask(self, state: TokenState) -> torch.Tensor:
        return torch.stack([self.row_mask(tuple(state.generated(r))) for r in range(state.batch)])  # (B, V)

    def row_mask(self, ids: tuple[int, ...]) -> torch.Tensor:
        """(V,) float64 exact log-weight mask of a row (cached with its matcher)."""
        m = self.matcher(ids)
        cached = self._rows.get(ids)
        if cached is not None and cached[1] is not None:
            return cached[1]
        mask = torch.full((self.vocab.size,), NEG_INF, dtype=torch.float64)
        if m is not None:
            allowed = np.frombuffer(m.compute_logit_bias(), dtype=np.uint8)[:self.vocab.size] != 0  # (V,)
            mask[torch.from_numpy(allowed.copy())] = 0.0
            mask[self.empty] = 0.0
            mask[self.eos] = 0.0 if m.is_accepting() else NEG_INF  # llguidance also allows EOS when stuck
        self.remember(ids, m, mask)
        return mask

    def prefix_texts(self, texts: Sequence[bytes]) -> torch.Tensor:
        return self.potential.prefix(texts)

    def complete_texts(self, texts: Sequence[bytes]) -> torch.Tensor:
        return self.potential.complete(texts)
