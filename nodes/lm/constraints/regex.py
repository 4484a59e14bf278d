"""constraint.regex: text that fully matches a regular expression, as a byte DFA with partial-match semantics."""
from __future__ import annotations

from pydantic import Field

from ....graph.errors import NodeError
from ...api import Node, node
from ..potential import Potential
from .automaton import AutomatonPotential
from .regex_dfa import RegexDFA
from .regex_syntax import RegexSyntaxError


@node("constraint.regex", version=1)
class RegexConstraint(Node):
    """A regex over UTF-8 bytes as a lazily determinised DFA (Thompson 1968; Rabin and Scott 1959): a prefix is
    valid iff it can still be completed to a full match. Syntax: see nodes/lm/constraints/regex_syntax.py."""

    pattern: str = Field(..., description="a whole-text regex (classes, \\d \\w \\s, * + ? {m,n}, |, groups)")

    def run(self) -> Potential:
        return AutomatonPotential(compile_regex(self.pattern))


def compile_regex(pattern: str) -> RegexDFA:
    """The pattern's DFA, or a NodeError naming the parameter, the problem and its position."""
    try:
        dfa = RegexDFA(pattern)
    except RegexSyntaxError as e:
        raise NodeError(f"parameter 'pattern': malformed or unsupported regex {pattern!r}: {e}") from None
    if dfa.start == 0:
        raise NodeError(f"parameter 'pattern': the regex {pattern!r} matches no text at all")
    return dfa
