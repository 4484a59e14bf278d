"""model.condition: bind a class (or none) to a labelled model: an analytic mixture (giving the exact
conditional Denoiser p(x0 | class), the exact unconditional one, or a weakened copy of either) or a
class-conditional network (its class or its null class, networks/conditional.py).

Conditioning is bound, not passed (docs/ARCHITECTURE.md): guidance nodes receive these Denoisers and
never see a label. The weak model for autoguidance is the same mixture with every std
multiplied by `weakness` (a blurrier, less certain model whose denoiser is still exact)."""
from __future__ import annotations

from pydantic import Field

from ..api import Node, node
from .labelled import Labelled


@node("model.condition")
class ModelCondition(Node):
    """The class-conditional denoiser p(x0 | class) of a labelled model (Ho & Salimans 2022 setting)."""

    label: int | None = Field(None, ge=0, description="class to condition on; None = unconditional (the full mixture)")
    weakness: float = Field(1.0, ge=1.0, description="std multiplier of a weaker model for autoguidance; 1 = exact")

    def run(self, model: Labelled) -> Labelled:
        """The model bound to the class (a mixture: its components, renormalised), optionally broadened."""
        bound = model if self.label is None else model.restricted(self.label)
        return bound if self.weakness == 1.0 else bound.broadened(self.weakness)
