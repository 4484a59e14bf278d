"""guidance.skip_layer: skip-layer guidance, CFG plus a push away from the same conditional model
with some residual blocks skipped (model.skip_blocks), inside a sigma interval.

Outside the interval the output is plain CFG (the skip term is off and the skipped model is not
called), as in SD3.5's SLG, which limits the skip term to a window of steps."""
from __future__ import annotations

import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..models.joint_calls import evaluate
from .common import Batching, GuidanceInterval, cfg, evaluations_of


@node("guidance.skip_layer")
class SkipLayerGuidance(GuidanceInterval, Batching):
    """Skip-layer guidance cfg(c, u, w) + s (c - c_skip) (Hyung et al. 2024, STG; Stability AI's SD3.5 SLG)."""

    scale: float = Field(3.0, description="CFG scale w: 1 = no CFG (the unconditional model then has no effect)")
    skip_scale: float = Field(2.0, description="s: weight of the push away from the skipped model; 0 = plain CFG")

    def run(self, cond: Denoiser, uncond: Denoiser, skipped: Denoiser) -> Denoiser:
        """The guided Denoiser (CFG's 2 evaluations, plus the skipped model's inside the interval)."""
        return SkipGuided(self, cond, uncond, skipped)


class SkipGuided(Denoiser):
    """CFG of cond and uncond, plus skip_scale (cond - skipped) on the rows inside the rule's interval."""

    def __init__(self, rule: SkipLayerGuidance, cond: Denoiser, uncond: Denoiser, skipped: Denoiser):
        self.rule, self.cond, self.uncond, self.skipped = rule, cond, uncond, skipped

    def to(self, device: torch.device) -> SkipGuided:
        return SkipGuided(self.rule, self.cond.to(device), self.uncond.to(device), self.skipped.to(device))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        idx = self.rule.active(sigma).nonzero().squeeze(1)  # (A,)
        calls = [(self.cond, x, sigma), (self.uncond, x, sigma)]
        if idx.numel():
            calls.append((self.skipped, x[idx], sigma[idx]))
        x0_c, x0_u, *skipped = evaluate(calls, self.rule.batch)  # (B, ...), (B, ...), [(A, ...)]
        x0_g = cfg(x0_c, x0_u, self.rule.scale)  # (B, ...)
        if not skipped:
            return x0_g
        out = x0_g.clone()
        out[idx] = x0_g[idx] + self.rule.skip_scale * (x0_c[idx] - skipped[0])
        return out

    def evaluations(self, sigma: torch.Tensor) -> int:
        on = self.rule.active(sigma)  # (B,)
        skip = evaluations_of(self.skipped, sigma[on]) if bool(on.any()) else 0
        return evaluations_of(self.cond, sigma) + evaluations_of(self.uncond, sigma) + skip
