"""Labelled: a Model over classes that model.condition can bind to one class, as the analytic
GaussianMixture (exactly) and ConditionalNetwork (a trained network with a null class) both are."""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch

from ...graph.errors import NodeError
from ..core.model import Model


class Labelled(Model):
    """A class-aware Model; unbound it is the unconditional model p(x0)."""

    @abstractmethod
    def restricted(self, label: int) -> Labelled:
        """The model of p(x0 | class = label)."""

    @abstractmethod
    def broadened(self, factor: float) -> Labelled:
        """A weaker copy for autoguidance (NodeError where the model has no such knob)."""

    @property
    def skippable_blocks(self) -> int:
        """How many residual blocks `skipping` may skip (0: none, e.g. an analytic model)."""
        return 0

    def skipping(self, blocks: Sequence[int]) -> Labelled:
        """A weaker copy with the residual blocks `blocks` skipped, for skip-layer guidance."""
        raise NodeError(f"{type(self).__name__} has no residual blocks to skip (it is not a network with "
                        f"blocks); skip-layer guidance needs a network model such as model.digits")

    def condition_embedding(self) -> torch.Tensor:
        """The embedding (E,) of the bound condition (the null class when unbound), for guidance.cads."""
        raise NodeError(f"{type(self).__name__} has no condition embedding (an analytic mixture conditions by "
                        f"restricting its components); guidance.cads needs a network with a class embedding "
                        f"such as model.digits")

    def denoise_embedded(self, x: torch.Tensor, sigma: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x0 (B, ...) of x (B, ...) at sigma (B,) with per-row condition embeddings emb (B, E) (guidance.cads)."""
        raise NodeError(f"{type(self).__name__} cannot evaluate with condition embeddings; guidance.cads needs a "
                        f"network with a class embedding such as model.digits")
