"""sampler.dc_solver: UniPC with DC-Solver's dynamic compensation (Zhao et al. 2024, ECCV).

Before the predictor of step i (after UniC corrected the point), the newest model output m_i is
replaced by the Lagrange interpolant of the last dc_order + 1 outputs evaluated at
    lambda_i' = rho_i lambda_i + (1 - rho_i) lambda_{i-1},
and the compensated output is kept in the history (the next corrector and predictors use it), as the
authors' dynamic_compensation does. rho_i = 1 leaves UniPC untouched, bit for bit. Steps before
dc_order + 1 outputs exist are never compensated. The ratios come from sampler.dc_solver_calibrate.

Departure: the authors interpolate in their VP time t; this engine has no t (samplers see sigma only),
so the interpolation variable is lambda = -log(sigma), the variable UniPC itself integrates in."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field, model_validator

from ...graph.errors import NodeError
from ..api import node
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .unipc import UniPC


@dataclass(frozen=True)
class CompensationRatios:
    """DC-Solver's per-step ratios rho_i for one schedule (JSON data: lists of floats)."""

    ratios: tuple[float, ...]  # (S,) one per step
    sigmas: tuple[float, ...]  # (S+1,) the schedule they were calibrated on

    def cache_encode(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {"ratios": list(self.ratios), "sigmas": list(self.sigmas)}

    @classmethod
    def cache_decode(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> CompensationRatios:
        return cls(tuple(meta["ratios"]), tuple(meta["sigmas"]))


def lagrange_at(target: torch.Tensor, nodes: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
    """The Lagrange interpolant through (nodes[j] (B,), values[j] (B, ...)) at target (B,): (B, ...)."""
    out = torch.zeros_like(values[0])
    for j, vj in enumerate(values):
        w = torch.ones_like(target)
        for i, ni in enumerate(nodes):
            if i != j:
                w = w * (target - ni) / (nodes[j] - ni)
        out = out + bcast(w.to(vj.dtype), vj) * vj
    return out


@node("sampler.dc_solver", version=1)
class DcSolver(UniPC):
    """Implements DC-Solver, UniPC with dynamic compensation of its misalignment (Zhao et al. 2024)."""

    ratios: list[float] | None = Field(None, description="rho_i per step (sampler.dc_solver_calibrate); "
                                                         "None: all 1 (plain UniPC)")
    dc_order: int = Field(2, ge=1, le=3, description="degree of the Lagrange interpolation (<= solver_order)")

    @model_validator(mode="after")
    def _history_holds_the_points(self) -> DcSolver:
        if self.dc_order > self.solver_order:
            raise ValueError(f"dc_order ({self.dc_order}) needs dc_order + 1 outputs but solver_order "
                             f"{self.solver_order} keeps {self.solver_order + 1}; lower dc_order or raise solver_order")
        return self

    def run(self, calibration: CompensationRatios | None = None) -> Sampler:
        """This solver, with the calibrated ratios when given (they replace the `ratios` parameter)."""
        if calibration is None:
            return self
        return self.model_copy(update={"ratios": list(calibration.ratios)})

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        if self.ratios is not None and len(self.ratios) != sigmas.steps:
            raise NodeError(f"sampler.dc_solver: 'ratios' has {len(self.ratios)} entries but the schedule has "
                            f"{sigmas.steps} steps; calibrate on this schedule (sampler.dc_solver_calibrate)")
        return super().init(x, sigmas, particle)

    def compensated(self, state: State, m: torch.Tensor, past: list[torch.Tensor]) -> torch.Tensor:
        """m replaced by the interpolant at lambda_i' where rho_i != 1 and dc_order + 1 outputs exist."""
        if self.ratios is None:
            return m
        table = torch.tensor(self.ratios, dtype=torch.float64, device=m.device)  # (S,)
        rho = table[state.step.clamp(max=table.numel() - 1)]  # (B,)
        active = (rho != 1) & (state.step >= self.dc_order)  # (B,)
        if not bool(active.any()):
            return m
        lam = -torch.log(state.sigmas.to(torch.float64))  # (S+1,)
        nodes = [lam[(state.step - j).clamp(min=0)] for j in range(self.dc_order + 1)]  # (B,) each
        target = rho * nodes[0] + (1 - rho) * nodes[1]  # (B,)
        dc = lagrange_at(target, nodes, [m, *past[:self.dc_order]])  # (B, ...)
        return torch.where(bcast(active, m), dc, m)
