"""constraint.lark: text in the language of a Lark context-free grammar, through llguidance."""
from __future__ import annotations

from pydantic import Field

from ...api import Node, node
from ..potential import Potential
from .grammar import GrammarPotential, checked_grammar


@node("constraint.lark", version=1)
class LarkConstraint(Node):
    """A Lark grammar (llguidance's dialect, rule `start`) compiled by llguidance (Moskal et al. 2025)."""

    grammar: str = Field(..., description="the Lark grammar text; its rule 'start' is the whole text")

    def run(self) -> Potential:
        return GrammarPotential(checked_grammar(self.grammar, "parameter 'grammar'"))
