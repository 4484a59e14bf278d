"""Shared machinery of the guidance nodes: a guidance node is a rule `combine(x, sigma, x0_c, x0_o)`
plus a sigma interval; `Guided` applies it to a conditional and an other (unconditional, weak,
...) Denoiser and is itself a Denoiser, so samplers never know guidance exists.

Guidance interval (Kynkaanniemi et al. 2024): the rule applies where sigma_lo < sigma <= sigma_hi;
elsewhere the output is the conditional estimate itself and the other Denoiser is not called
for those rows (they are gathered out, so the saved evaluations are real).

NFE accounting: one call of a Guided denoiser makes several batched inner calls. `evaluations`
says how many, as a pure function of sigma (nested guidance recurses), so a counting wrapper
can add the true number instead of 1 (see `evaluations_of`)."""
from __future__ import annotations

from abc import abstractmethod

import torch
from pydantic import Field, ValidationInfo, field_validator

from ..api import Node
from ..core.denoiser import Denoiser
from ..core.state import bcast


def evaluations_of(denoise: Denoiser, sigma: torch.Tensor) -> int:
    """Batched model evaluations one call of `denoise` at sigma (B,) makes (1 for a plain model)."""
    return int(denoise.evaluations(sigma))


def rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product (B,) of a, b (B, ...) over every non-batch dimension."""
    return (a * b).flatten(1).sum(1)


class Guidance(Node):
    """Base of the guidance nodes: the sigma interval and the combination rule."""

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

    @abstractmethod
    def combine(self, x: torch.Tensor, sigma: torch.Tensor, x0_c: torch.Tensor, x0_o: torch.Tensor) -> torch.Tensor:
        """The guided x0 (B, ...) from x (B, ...), sigma (B,), the conditional and the other estimate."""


class Guided(Denoiser):
    """A guidance rule applied to a conditional and an other Denoiser, inside its sigma interval."""

    def __init__(self, rule: Guidance, cond: Denoiser, other: Denoiser):
        self.rule, self.cond, self.other = rule, cond, other

    def __repr__(self) -> str:
        return f"Guided({type(self.rule).__name__}, {self.cond!r}, {self.other!r})"

    def to(self, device: torch.device) -> Guided:
        return Guided(self.rule, self.cond.to(device), self.other.to(device))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x0_c = self.cond(x, sigma)  # (B, ...)
        on = self.rule.active(sigma)  # (B,)
        if bool(on.all()):
            return self.rule.combine(x, sigma, x0_c, self.other(x, sigma))
        if not bool(on.any()):
            return x0_c
        idx = on.nonzero().squeeze(1)  # (A,)
        out = x0_c.clone()
        out[idx] = self.rule.combine(x[idx], sigma[idx], x0_c[idx], self.other(x[idx], sigma[idx]))
        return out

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
