"""constraint.lexicon: text that is a word of a word list, or words of it joined by a separator, as a byte trie."""
from __future__ import annotations

from pydantic import Field

from ....graph.errors import NodeError
from ...api import Node, node
from ..potential import Potential
from .automaton import AutomatonPotential
from .regex_dfa import ByteNFA, SubsetDFA


@node("constraint.lexicon", version=1)
class LexiconConstraint(Node):
    """Words of a list as a byte trie (Fredkin 1960), determinised with its separator loop on demand: a prefix is
    valid iff it starts a word (sequence); with a separator, the text is w1 sep w2 sep ... wn (n >= 1)."""

    words: list[str] = Field(..., min_length=1, description="the allowed words (UTF-8; not empty)")
    separator: str | None = Field(None, description="None: the text is exactly one word; else one or more words "
                                                    "joined by this separator (e.g. ' ')")

    def run(self) -> Potential:
        return AutomatonPotential(lexicon_dfa([w.encode() for w in self.words],
                                              None if self.separator is None else self.separator.encode()))


def lexicon_dfa(words: list[bytes], separator: bytes | None) -> SubsetDFA:
    """The DFA of one word, or of word (separator word)*."""
    if any(not w for w in words):
        raise NodeError("parameter 'words': an empty word; every word needs at least one character")
    if separator == b"":
        raise NodeError("parameter 'separator': an empty separator; give None for single words")
    nfa = ByteNFA()
    one = nfa.trie(words)
    if separator is None:
        return SubsetDFA(nfa, *one)
    more = nfa.star(nfa.chain(nfa.literal(separator), nfa.trie(words)))
    return SubsetDFA(nfa, *nfa.chain(one, more))
