"""Labelled: a Model over classes that model.condition can bind to one class, as the analytic
GaussianMixture (exactly) and ConditionalNetwork (a trained network with a null class) both are."""
from __future__ import annotations

from abc import abstractmethod

from ..core.model import Model


class Labelled(Model):
    """A class-aware Model; unbound it is the unconditional model p(x0)."""

    @abstractmethod
    def restricted(self, label: int) -> Labelled:
        """The model of p(x0 | class = label)."""

    @abstractmethod
    def broadened(self, factor: float) -> Labelled:
        """A weaker copy for autoguidance (NodeError where the model has no such knob)."""
