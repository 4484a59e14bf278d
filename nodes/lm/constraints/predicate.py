"""A user's own byte-level constraint as a plugin node class: subclass `BytePredicateConstraint` in your package,
decorate it with @node("constraint.<name>"), and list it under the entry-point group `samplegraph.nodes`
(nodes/api.py); a workflow then names its kind and parameters, never code:

    @node("constraint.balanced", version=1)
    class Balanced(BytePredicateConstraint):
        '''Balanced parentheses.'''
        def is_prefix(self, text: bytes) -> bool: ...   # False only if no completion can be complete
        def is_complete(self, text: bytes) -> bool: ...
"""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch

from ...api import Node
from ..potential import Potential
from .automaton import verdict


class BytePredicateConstraint(Node):
    """Base of users' byte-level constraints: the node's parameters are its fields, `run` gives the Potential.
    `is_prefix(text)` must be False only when no completion of text satisfies `is_complete` (partial-match
    semantics); bound to a vocabulary it is asked once per candidate (a full mask asks V times per row)."""

    @abstractmethod
    def is_prefix(self, text: bytes) -> bool:
        """Whether text can still be completed to a text that `is_complete` accepts."""

    @abstractmethod
    def is_complete(self, text: bytes) -> bool:
        """Whether text is acceptable as a finished string."""

    def run(self) -> Potential:
        return PredicatePotential(self)


class PredicatePotential(Potential):
    """A BytePredicateConstraint as a boolean Potential (0 / -inf)."""

    def __init__(self, predicate: BytePredicateConstraint):
        self.predicate = predicate

    def prefix(self, texts: Sequence[bytes]) -> torch.Tensor:
        return verdict([self.predicate.is_prefix(t) for t in texts])

    def complete(self, texts: Sequence[bytes]) -> torch.Tensor:
        return verdict([self.predicate.is_complete(t) for t in texts])
