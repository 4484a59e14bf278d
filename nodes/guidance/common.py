"""Shared machinery of the guidance nodes: a guidance node is a rule `combine(x, sigma, x0_c, x0_o)`
plus a sigma interval; `Guided` applies it to a conditional and an other (unconditional, weak,
...) Denoiser and is itself a Denoiser, so samplers never know guidance exists.

Guidance interval (Kynkaanniemi et al. 2024): the rule applies where sigma_lo < sigma <= sigma_hi;
elsewhere the output is the conditional estimate itself and the other Denoiser is not called
for those rows (they are gathered out, so the saved evaluations are real).

Batching: the Denoisers a node evaluates at one point (cond and uncond of CFG) go through
`models.joint_calls.evaluate`, one network call when they are the same network with different bound
conditioning (a prompt and a negative prompt), as diffusers' pipelines batch them; nodes that do so take
`batch` (Batching) to turn it off (less peak memory, one call each).

NFE accounting: one call of a Guided denoiser makes several batched inner calls. `evaluations`
says how many, as a pure function of sigma (nested guidance recurses), so a counting wrapper
can add the true number instead of 1 (see `evaluations_of`).

Guidance by a differentiable function of the x0 estimate (reward gradient, coarse h-transform)
shares `X0GradientGuided`: x0 + scale sigma^2 grad_x f(D(x, sigma), sigma), with the same interval."""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
from pydantic import Field, ValidationInfo, field_validator

from ..api import Node
from ..core.denoiser import Denoiser
from ..core.state import bcast
from ..models.joint_calls import evaluate


RowRule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


def evaluations_of(denoise: Denoiser, sigma: torch.Tensor) -> int:
    """Batched model evaluations one call of `denoise` at sigma (B,) makes (1 for a plain model)."""
    return int(denoise.evaluations(sigma))


def rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product (B,) of a, b (B, ...) over every non-batch dimension."""
    return (a * b).flatten(1).sum(1)


class GuidanceInterval(Node):
    """Base of the guidance nodes: the sigma interval where they guide."""

    sigma_lo: float = Field(0.0, ge=0.0, description="guide only where sigma > sigma_lo (Kynkaanniemi et al. 2024)")
    sigma_hi: float | None = Field(None, gt=0.0, description="guide only where sigma <= sigma_hi; None = no bound")

    @field_validator("sigma_hi")
    @classmethod
    def _above_lo(cls, value: float | None, info: ValidationInfo) -> float | None:
        """An empty interval would silently disable guidance."""
        low = info.data.get("sigma_lo")
        if value is not None and low is not None and not value > low:
            raise ValueError(f"must be greater than sigma_lo ({low}); widen the interval")
        return value

    def active(self, sigma: torch.Tensor) -> torch.Tensor:
        """(B,) bool: rows whose sigma lies in the guidance interval."""
        on = sigma > self.sigma_lo
        return on if self.sigma_hi is None else on & (sigma <= self.sigma_hi)


class Guidance(GuidanceInterval):
    """Base of the guidance nodes that combine two estimates: the sigma interval and the combination rule."""

    @abstractmethod
    def combine(self, x: torch.Tensor, sigma: torch.Tensor, x0_c: torch.Tensor, x0_o: torch.Tensor) -> torch.Tensor:
        """The guided x0 (B, ...) from x (B, ...), sigma (B,), the conditional and the other estimate."""


class Batching(Node):
    """The `batch` parameter of guidance nodes that evaluate several Denoisers at one point."""

    batch: bool = Field(True, description="evaluate the Denoisers that share one network (prompt and negative "
                        "prompt) in one network call, as diffusers batches CFG; False: one call each (less peak "
                        "memory; the same result up to float rounding)")
    key_omits_default: ClassVar[frozenset[str]] = frozenset({"batch"})  # keys written before `batch` stay valid


class PairGuidance(Guidance, Batching):
    """Base of the guidance nodes whose rule combines a conditional and an other Denoiser (`Guided`)."""


def cond_and_other(rule: GuidanceInterval, batch: bool, cond: Denoiser, other: Denoiser, x: torch.Tensor,
                   sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(x0_c (B, ...), idx (A,): the rows inside the rule's interval, x0_o (A, ...) of `other` on them, None
    when A = 0): one network call for both where they share a network and `batch` is on."""
    idx = rule.active(sigma).nonzero().squeeze(1)  # (A,)
    if idx.numel() == 0:
        return cond(x, sigma), idx, None
    inside = (x, sigma) if idx.numel() == x.shape[0] else (x[idx], sigma[idx])  # (A, ...), (A,)
    x0_o, x0_c = evaluate([(other, *inside), (cond, x, sigma)], batch)
    return x0_c, idx, x0_o


class Guided(Denoiser):
    """A guidance rule applied to a conditional and an other Denoiser, inside its sigma interval."""

    def __init__(self, rule: PairGuidance, cond: Denoiser, other: Denoiser):
        self.rule, self.cond, self.other = rule, cond, other

    def __repr__(self) -> str:
        return f"Guided({type(self.rule).__name__}, {self.cond!r}, {self.other!r})"

    def to(self, device: torch.device) -> Guided:
        return Guided(self.rule, self.cond.to(device), self.other.to(device))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.rowwise(x, sigma, lambda *rows: (self.rule.combine(*rows),), 1)[0]  # (B, ...)

    def rowwise(self, x: torch.Tensor, sigma: torch.Tensor, fn: RowRule, outputs: int) -> tuple[torch.Tensor, ...]:
        """fn(x, sigma, x0_c, x0_o)'s `outputs` tensors on the rows inside the interval, x0_c (B, ...) on the
        others; the other Denoiser is called only on the inside rows, and not at all when there are none."""
        x0_c, idx, x0_o = cond_and_other(self.rule, self.rule.batch, self.cond, self.other, x, sigma)
        if x0_o is None:
            return (x0_c,) * outputs
        if idx.numel() == x.shape[0]:
            return fn(x, sigma, x0_c, x0_o)
        inside = fn(x[idx], sigma[idx], x0_c[idx], x0_o)  # (A, ...) each
        outs = tuple(x0_c.clone() for _ in inside)  # (B, ...) each
        for out, rows in zip(outs, inside):
            out[idx] = rows
        return outs

    def evaluations(self, sigma: torch.Tensor) -> int:
        """The conditional's evaluations, plus the other's when any row is in the interval."""
        on = self.rule.active(sigma)  # (B,)
        return evaluations_of(self.cond, sigma) + (evaluations_of(self.other, sigma[on]) if bool(on.any()) else 0)


def cfg(x0_c: torch.Tensor, x0_u: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance x0_u + scale (x0_c - x0_u) (Ho & Salimans 2022, eq. 6 in x0 terms)."""
    return x0_u + scale * (x0_c - x0_u)


def flow_velocity(x: torch.Tensor, sigma: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The rectified-flow velocity eps - x0 (B, ...) of the estimate x0 at x = x0 + sigma eps (sigma > 0)."""
    return (x - x0) / bcast(sigma, x) - x0


def x0_of_velocity(x: torch.Tensor, sigma: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The x0 (B, ...) whose flow velocity at x is v: x_t - t v with x_t = x / (1 + sigma), t = sigma / (1 + sigma)."""
    s = bcast(sigma, x)
    return (x - s * v) / (1 + s)


X0Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x0 (B, ...), sigma (B,)) -> (B,)


class X0GradientGuided(Denoiser):
    """x0 + scale sigma^2 grad_x f(D(x, sigma), sigma) inside the rule's interval: guidance by a differentiable
    function f of the x0 estimate, its gradient taken through the denoiser (Chung et al. 2023, DPS).

    By Tweedie, adding grad_x log h(x) to the score adds sigma^2 grad_x log h to the x0 estimate. One
    forward with gradients over the whole batch serves both the estimate and the gradient (rows are
    independent, so the gradient of the sum is per row); the backward pass counts as one more evaluation."""

    def __init__(self, rule: GuidanceInterval, denoise: Denoiser, objective: X0Objective, scale: float):
        self.rule, self.denoise, self.objective, self.scale = rule, denoise, objective, scale

    def to(self, device: torch.device) -> X0GradientGuided:
        return X0GradientGuided(self.rule, self.denoise.to(device), self.objective, self.scale)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        on = self.rule.active(sigma)  # (B,)
        if not bool(on.any()):
            return self.denoise(x, sigma)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            x0 = self.denoise(xg, sigma)  # (B, ...)
            value = self.objective(x0, sigma)  # (B,)
            (grad,) = torch.autograd.grad(value[on].sum(), xg)  # (B, ...)
        x0 = x0.detach()
        guided = x0 + self.scale * bcast(sigma ** 2, x0) * grad.to(x0.dtype)  # (B, ...)
        return torch.where(bcast(on, x0), guided, x0)

    def evaluations(self, sigma: torch.Tensor) -> int:
        return evaluations_of(self.denoise, sigma) + int(bool(self.rule.active(sigma).any()))
