"""model.gmm_condition: model.condition for analytic mixtures, whose output is still a
GaussianMixture, so the conditional can also be the exact reference of metrics and plots."""
from __future__ import annotations

from ..api import node
from .condition import ModelCondition
from .gaussian_mixture import GaussianMixture


@node("model.gmm_condition")
class ModelGMMCondition(ModelCondition):
    """The exact class-conditional mixture p(x0 | class) (or the full or a broadened one) as a Distribution."""

    def run(self, model: GaussianMixture) -> GaussianMixture:
        """The mixture restricted to the class's components (renormalised), optionally broadened."""
        return super().run(model)
