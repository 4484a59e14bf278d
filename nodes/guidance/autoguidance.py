"""guidance.autoguidance: guide a model with a weaker version of itself instead of an unconditional model."""
from __future__ import annotations

import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from .common import Guided, PairGuidance, cfg


@node("guidance.autoguidance")
class Autoguidance(PairGuidance):
    """Autoguidance D_w = D_0 + w (D_1 - D_0) with a weak model D_0 (Karras et al. 2024, eq. 2)."""

    scale: float = Field(2.0, description="guidance weight w: 1 = the main model alone")

    def combine(self, x: torch.Tensor, sigma: torch.Tensor, x0_c: torch.Tensor, x0_o: torch.Tensor) -> torch.Tensor:
        return cfg(x0_c, x0_o, self.scale)  # (B, ...) the same extrapolation, away from the weak model

    def run(self, cond: Denoiser, weak: Denoiser) -> Denoiser:
        """The guided Denoiser (2 model evaluations per call inside the interval, 1 outside)."""
        return Guided(self, cond, weak)
