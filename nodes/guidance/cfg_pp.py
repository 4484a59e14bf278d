"""guidance.cfg_pp: CFG++, classifier-free guidance on the manifold: the step moves towards the
lambda-interpolated estimate x0_u + lambda (x0_c - x0_u) but re-noises with the unconditional
estimate's noise (x - x0_u) / sigma.

The guided Denoiser says so through `Denoiser.estimates` -> (x0_lambda, x0_u) and
`separate_renoise`; samplers that take both (`supports_renoise`: euler, euler_ancestral, ddim,
dpmpp_2m) step exactly as ComfyUI's sample_*_cfg_pp, e.g. Euler x' = x0_lambda + sigma' (x - x0_u) / sigma,
and the loop refuses the others (run_steps' check_renoise) instead of silently doing plain CFG.
Outside the guidance interval both estimates are the conditional one: the plain conditional step.
Only the outermost Denoiser's `estimates` reach the sampler: used as an input of another guidance
node, CFG++ acts through its x0 alone (x0_lambda, i.e. CFG with scale lambda)."""
from __future__ import annotations

import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from .common import Guided, PairGuidance, cfg


@node("guidance.cfg_pp")
class CFGPP(PairGuidance):
    """CFG++ (Chung et al. 2024, Algorithms 1-2): x0 from lambda-guidance, re-noised with the unconditional eps."""

    scale: float = Field(0.8, ge=0.0, le=1.0, description="lambda in [0, 1]: 0 = unconditional, 1 = the "
                                                          "conditional x0 re-noised with the unconditional eps")

    def combine(self, x: torch.Tensor, sigma: torch.Tensor, x0_c: torch.Tensor, x0_o: torch.Tensor) -> torch.Tensor:
        return cfg(x0_c, x0_o, self.scale)  # (B, ...)

    def run(self, cond: Denoiser, uncond: Denoiser) -> Denoiser:
        """The guided Denoiser (2 model evaluations per call inside the interval, 1 outside); steps need a
        sampler with supports_renoise."""
        return RenoiseGuided(self, cond, uncond)


class RenoiseGuided(Guided):
    """A Guided denoiser whose re-noise estimate is the other (unconditional) estimate inside the interval."""

    def to(self, device: torch.device) -> RenoiseGuided:
        return RenoiseGuided(self.rule, self.cond.to(device), self.other.to(device))

    @property
    def separate_renoise(self) -> bool:
        return True

    def estimates(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_lambda, x0_u) inside the interval, (x0_c, x0_c) outside, each (B, ...)."""
        x0, x0_r = self.rowwise(x, sigma, lambda x_, s_, c, u: (self.rule.combine(x_, s_, c, u), u), 2)
        return x0, x0_r
