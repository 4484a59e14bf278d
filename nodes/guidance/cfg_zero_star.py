"""guidance.cfg_zero_star: CFG-Zero*, CFG in rectified-flow velocity space with an optimised
scale on the unconditional velocity, and zero velocity at the start of sampling.

Velocities are those of the flow path x_t = x / (1 + sigma), t = sigma / (1 + sigma) of
the estimate (v = eps - x0), whatever the model's own parametrisation; with s* = 1 this is
plain CFG, since v is affine in x0. A Denoiser does not know step indices, so "the first
steps" are given as a noise level: rows with sigma > zero_above get v = 0 (x0 = x_t) and
cost no model evaluation."""
from __future__ import annotations

import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.state import bcast
from .common import Guided, PairGuidance, evaluations_of, flow_velocity, rowdot, x0_of_velocity

TINY = 1e-8  # the reference code's guard on |v_u|^2


@node("guidance.cfg_zero_star")
class CFGZeroStar(PairGuidance):
    """CFG-Zero*: optimised scale s* = <v_c, v_u> / |v_u|^2 and zero-init (Fan et al. 2025, eqs. 8-9)."""

    scale: float = Field(3.0, description="guidance scale w on the velocity")
    optimized_scale: bool = Field(True, description="scale the unconditional velocity by s* (False: plain CFG)")
    zero_above: float | None = Field(None, gt=0.0, description="zero-init: v = 0 where sigma > zero_above; None = off")

    def combine(self, x: torch.Tensor, sigma: torch.Tensor, x0_c: torch.Tensor, x0_o: torch.Tensor) -> torch.Tensor:
        v_c, v_u = flow_velocity(x, sigma, x0_c), flow_velocity(x, sigma, x0_o)  # (B, ...)
        if self.optimized_scale:
            v_u = v_u * bcast(rowdot(v_c, v_u) / (rowdot(v_u, v_u) + TINY), v_u)
        return x0_of_velocity(x, sigma, v_u + self.scale * (v_c - v_u))  # (B, ...)

    def run(self, cond: Denoiser, uncond: Denoiser) -> Denoiser:
        """The guided Denoiser, behind the zero-init when zero_above is set."""
        guided = Guided(self, cond, uncond)
        return guided if self.zero_above is None else ZeroInit(guided, self.zero_above)


class ZeroInit(Denoiser):
    """x0 = x / (1 + sigma) (zero flow velocity) where sigma > above; the inner Denoiser elsewhere."""

    def __init__(self, inner: Denoiser, above: float):
        self.inner, self.above = inner, above

    def to(self, device: torch.device) -> ZeroInit:
        return ZeroInit(self.inner.to(device), self.above)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = x / bcast(1 + sigma, x)  # (B, ...)
        idx = (sigma <= self.above).nonzero().squeeze(1)  # (A,)
        if idx.numel() > 0:
            out[idx] = self.inner(x[idx], sigma[idx])
        return out

    def evaluations(self, sigma: torch.Tensor) -> int:
        keep = sigma <= self.above  # (B,)
        return evaluations_of(self.inner, sigma[keep]) if bool(keep.any()) else 0
