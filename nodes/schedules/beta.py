"""schedule.beta: timesteps at Beta(alpha, beta) quantiles (Lee et al. 2024; ComfyUI's beta scheduler)."""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.model import Model
from ..core.sigmas import Sigmas
from .common import append_zero, discrete_table


@node("schedule.beta", version=1)
class Beta(Node):
    """Implements the beta sampling schedule of Lee et al. (2024, arXiv:2407.12173): table entries at Beta(alpha, beta) quantiles."""

    steps: int = Field(10, ge=1, description="target steps; repeated quantile indices are merged, so maybe fewer")
    alpha: float = Field(0.6, gt=0, description="< 1 concentrates steps at high noise")
    beta: float = Field(0.6, gt=0, description="< 1 concentrates steps at low noise")

    def run(self, model: Model) -> Sigmas:
        """table[rint(ppf(1 - i / steps) * (N - 1))] for i = 0 .. steps - 1, repeats dropped, then 0."""
        try:
            from scipy.stats import beta as beta_dist
        except ImportError:
            raise NodeError("schedule.beta needs scipy for the Beta quantile function: pip install scipy") from None
        table = discrete_table(model, "schedule.beta")  # (N,) ascending
        quantiles = 1 - np.linspace(0, 1, self.steps, endpoint=False)  # (S,)
        idx = torch.from_numpy(np.rint(beta_dist.ppf(quantiles, self.alpha, self.beta) * (table.numel() - 1)))
        idx = torch.unique_consecutive(idx.long())  # (S',) descending
        return Sigmas(append_zero(table[idx]))  # (S' + 1,)
