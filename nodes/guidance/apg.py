"""guidance.apg: adaptive projected guidance, the CFG update split parallel / orthogonal to the
conditional estimate, the parallel part (which oversaturates) down-weighted by eta.

Momentum (the paper's running average of the update across steps, beta) is not offered: a
Denoiser sees only (x, sigma), not particle ids or step order, so a running average would
live in hidden state that changes with batch splitting, with multi-stage solvers (Heun calls
twice per step) and with search reordering particles. It belongs in the sampler State
(keyed by particle, advanced once per step), which guidance cannot reach without a core change."""
from __future__ import annotations

import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.state import bcast
from .common import Guidance, Guided, rowdot


@node("guidance.apg")
class APG(Guidance):
    """Adaptive projected guidance without momentum (Sadat et al. 2024, Algorithm 1 with beta = 0)."""

    scale: float = Field(3.0, description="guidance scale w: x0_c + (w - 1) * projected update")
    eta: float = Field(0.0, ge=0.0, description="weight of the update's component parallel to x0_c; 1 = CFG")
    norm_threshold: float | None = Field(None, gt=0.0, description="r: cap on each sample's update norm; None = none")

    def combine(self, x: torch.Tensor, sigma: torch.Tensor, x0_c: torch.Tensor, x0_o: torch.Tensor) -> torch.Tensor:
        diff = x0_c - x0_o  # (B, ...)
        if self.norm_threshold is not None:
            norm = diff.flatten(1).norm(dim=1)  # (B,)
            diff = diff * bcast((self.norm_threshold / norm.clamp_min(1e-30)).clamp(max=1.0), diff)
        unit = x0_c / bcast(x0_c.flatten(1).norm(dim=1).clamp_min(1e-30), x0_c)  # (B, ...)
        parallel = bcast(rowdot(diff, unit), diff) * unit  # (B, ...)
        update = (diff - parallel) + self.eta * parallel
        return x0_c + (self.scale - 1) * update

    def run(self, cond: Denoiser, uncond: Denoiser) -> Denoiser:
        """The guided Denoiser (2 model evaluations per call inside the interval, 1 outside)."""
        return Guided(self, cond, uncond)
