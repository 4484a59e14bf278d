"""guidance.cfg: classifier-free guidance, optionally limited to a guidance interval."""
from __future__ import annotations

import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from .common import Guided, PairGuidance, cfg


@node("guidance.cfg")
class CFG(PairGuidance):
    """Classifier-free guidance (Ho & Salimans 2022) with a guidance interval (Kynkaanniemi et al. 2024)."""

    scale: float = Field(3.0, description="guidance scale w: 1 = conditional, 0 = unconditional")

    def combine(self, x: torch.Tensor, sigma: torch.Tensor, x0_c: torch.Tensor, x0_o: torch.Tensor) -> torch.Tensor:
        return cfg(x0_c, x0_o, self.scale)  # (B, ...)

    def run(self, cond: Denoiser, uncond: Denoiser) -> Denoiser:
        """The guided Denoiser (2 model evaluations per call inside the interval, 1 outside)."""
        return Guided(self, cond, uncond)
