"""model.skip_blocks: a network model with some residual blocks skipped, the weak model of
skip-layer guidance (guidance.skip_layer guides the full model away from it)."""
from __future__ import annotations

from pydantic import Field

from ..api import Node, node
from .labelled import Labelled


@node("model.skip_blocks")
class ModelSkipBlocks(Node):
    """The model with residual blocks replaced by the identity, for skip-layer guidance (Hyung et al. 2024)."""

    blocks: list[int] = Field(min_length=1, description="indices of the residual blocks to skip (0-based; "
                              "model.digits has 0..2); the model keeps its class binding")

    def run(self, model: Labelled) -> Labelled:
        """A copy sharing the weights (NodeError for analytic models or out-of-range indices)."""
        return model.skipping(self.blocks)
