"""guidance.cfg_rescale: CFG whose x0 estimate is rescaled to the conditional estimate's std."""
from __future__ import annotations

import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.state import bcast
from .common import Guided, PairGuidance, cfg

TINY = 1e-12  # keeps the ratio finite where the guided estimate is constant across its coordinates


@node("guidance.cfg_rescale")
class CFGRescale(PairGuidance):
    """Rescaled classifier-free guidance (Lin et al. 2024, Algorithm 2 / Sec. 3.4 on the x0 estimate)."""

    scale: float = Field(3.0, description="guidance scale w")
    rescale: float = Field(0.7, ge=0.0, le=1.0, description="phi: blend of the std-rescaled and the plain CFG estimate")

    def combine(self, x: torch.Tensor, sigma: torch.Tensor, x0_c: torch.Tensor, x0_o: torch.Tensor) -> torch.Tensor:
        guided = cfg(x0_c, x0_o, self.scale)  # (B, ...)
        std_c = x0_c.flatten(1).std(1)  # (B,) over each sample's coordinates, as the paper does per image
        std_g = guided.flatten(1).std(1).clamp_min(TINY)  # (B,)
        rescaled = guided * bcast(std_c / std_g, guided)  # (B, ...)
        return self.rescale * rescaled + (1 - self.rescale) * guided

    def run(self, cond: Denoiser, uncond: Denoiser) -> Denoiser:
        """The guided Denoiser (2 model evaluations per call inside the interval, 1 outside)."""
        return Guided(self, cond, uncond)
