"""guidance.apg: adaptive projected guidance, the CFG update split parallel / orthogonal to the
conditional estimate, the parallel part (which oversaturates) down-weighted by eta, with the
paper's momentum: a running average v <- diff + beta v of the update over model calls.

Momentum is per-particle memory, so it lives in the sampler State (State.memory), not in the
Denoiser: run_steps binds it before each step and stores it back after (core/sampler.py
step_once), so it follows particles through batch splits and reordering. It is updated on every
call that evaluates the whole batch, like diffusers' MomentumBuffer (Heun: twice per step). A
call on part of the batch (e.g. sampler.restart's Heun step on some particles) is refused, as is
use inside a search strategy or under another guidance node, which would not carry the memory."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import node
from ..core.denoiser import BoundDenoiser, Denoiser
from ..core.state import bcast
from .common import Guided, PairGuidance, cond_and_other, evaluations_of, rowdot


@node("guidance.apg", version=2)
class APG(PairGuidance):
    """Adaptive projected guidance (Sadat et al. 2024, Algorithm 1): projection, norm threshold and momentum."""

    scale: float = Field(3.0, description="guidance scale w: x0_c + (w - 1) * projected update")
    eta: float = Field(0.0, ge=0.0, description="weight of the update's component parallel to x0_c; 1 = CFG")
    norm_threshold: float | None = Field(None, gt=0.0, description="r: cap on each sample's update norm; None = none")
    momentum: float = Field(0.0, gt=-1.0, lt=1.0, description="beta of the running average v <- diff + beta v "
                            "over model calls (the paper uses -0.5); 0 = none")

    def combine(self, x: torch.Tensor, sigma: torch.Tensor, x0_c: torch.Tensor, x0_o: torch.Tensor) -> torch.Tensor:
        return self.project(x0_c, x0_c - x0_o)  # (B, ...)

    def project(self, x0_c: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
        """x0_c + (w - 1) (diff_orth + eta diff_par), diff (B, ...) capped at norm r, split along x0_c."""
        if self.norm_threshold is not None:
            norm = diff.flatten(1).norm(dim=1)  # (B,)
            diff = diff * bcast((self.norm_threshold / norm.clamp_min(1e-30)).clamp(max=1.0), diff)
        unit = x0_c / bcast(x0_c.flatten(1).norm(dim=1).clamp_min(1e-30), x0_c)  # (B, ...)
        parallel = bcast(rowdot(diff, unit), diff) * unit  # (B, ...)
        update = (diff - parallel) + self.eta * parallel
        return x0_c + (self.scale - 1) * update

    def run(self, cond: Denoiser, uncond: Denoiser) -> Denoiser:
        """The guided Denoiser (2 model evaluations per call inside the interval, 1 outside)."""
        return Guided(self, cond, uncond) if self.momentum == 0 else MomentumGuided(self, cond, uncond)


class MomentumGuided(Guided):
    """APG with momentum: stateful; run_steps binds each particle's running average v (B, ...) to it."""

    rule: APG

    @property
    def stateful(self) -> bool:
        return True

    def to(self, device: torch.device) -> MomentumGuided:
        return MomentumGuided(self.rule, self.cond.to(device), self.other.to(device))

    def memory_init(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (torch.zeros_like(x),)  # v = 0 before the first call

    def bound(self, memory: tuple[torch.Tensor, ...]) -> MomentumBound:
        return MomentumBound(self, memory[0])

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NodeError("guidance.apg with momentum keeps a running average per particle, which only the sample "
                        "node carries; connect it directly to 'sample' (not to a search strategy or another "
                        "guidance node), or set momentum to 0")


class MomentumBound(BoundDenoiser):
    """MomentumGuided bound to one batch's running averages v (B, ...), updated on every whole-batch call."""

    def __init__(self, guided: MomentumGuided, average: torch.Tensor):
        self.guided, self.average = guided, average

    @property
    def memory(self) -> tuple[torch.Tensor, ...]:
        return (self.average,)

    def evaluations(self, sigma: torch.Tensor) -> int:
        return evaluations_of(self.guided, sigma)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        g, rule = self.guided, self.guided.rule
        if x.shape[0] != self.average.shape[0]:
            raise NodeError(f"guidance.apg momentum: the sampler evaluated {x.shape[0]} of {self.average.shape[0]} "
                            f"particles in one call, so their running averages cannot be matched; use a sampler "
                            f"that evaluates the whole batch (not sampler.restart), or set momentum to 0")
        x0_c, idx, x0_o = cond_and_other(rule, rule.batch, g.cond, g.other, x, sigma)  # idx: rows inside the interval
        if x0_o is None:
            return x0_c
        average = self.average.clone()
        average[idx] = (x0_c[idx] - x0_o) + rule.momentum * self.average[idx]  # (A, ...)
        self.average = average
        out = x0_c.clone()
        out[idx] = rule.project(x0_c[idx], average[idx])
        return out
