"""sampler.dc_solver_calibrate: DC-Solver's search for the compensation ratios (Zhao et al. 2024, Sec. 3.2).

On a few calibration trajectories (the `latent` batch) the ground truth is a many-step solve of the same
ODE (UniPC-3 on the schedule refined `substeps`-fold, log-uniform within each interval). Step by step,
rho_i minimises the mean squared error of the point step i reaches (after UniC, which needs the
evaluation at it) to the ground truth there, with the ratios found so far fixed; then the trajectory
advances with rho_i (the authors' search_dc). Steps before dc_order + 1 outputs keep rho = 1.

Departure: the authors run 40 AdamW steps (lr 0.1) on rho from 1 through autograd; here a bounded
Brent search over [rho_min, rho_max] (scipy), which needs no gradient of the network and is
deterministic. The cascade polynomial regression for unseen NFE: sampler.dc_solver_regression."""
from __future__ import annotations

import torch
from pydantic import Field, model_validator

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State
from .dc_solver import CompensationRatios, DcSolver
from .unipc import UniPC

NOISE = NoiseSource(0)  # UniPC draws no noise; step() still takes a source


def refined(sigmas: Sigmas, substeps: int) -> torch.Tensor:
    """sigmas (S+1,) with each interval split into `substeps` (log-uniform; linear into sigma = 0): (S*sub+1,)."""
    parts = []
    for a, b in zip(sigmas.values[:-1].tolist(), sigmas.values[1:].tolist()):
        grid = torch.linspace(0, 1, substeps + 1, dtype=torch.float64)[:-1]
        parts.append(a * (b / a) ** grid if b > 0 else a * (1 - grid))
    return torch.cat([*parts, sigmas.values[-1:]])


def ground_truth(denoise: Denoiser, x: torch.Tensor, sigmas: Sigmas, substeps: int) -> list[torch.Tensor]:
    """x (B, ...) carried along the refined schedule by UniPC-3: the states (B, ...) at each of sigmas' levels."""
    solver, fine = UniPC(solver_order=3), Sigmas(refined(sigmas, substeps))
    state, out = solver.init(x, fine), [x]
    for i in range(fine.steps):
        state = solver.step(denoise, state, NOISE)
        if (i + 1) % substeps == 0:
            out.append(state.x)
    return out


@node("sampler.dc_solver_calibrate", version=1)
class DcSolverCalibrate(Node):
    """Finds DC-Solver's compensation ratios on calibration trajectories (Zhao et al. 2024, Sec. 3.2)."""

    substeps: int = Field(20, ge=2, description="ground truth: UniPC-3 with this many steps per interval")
    rho_min: float = Field(0.5, description="search interval of each ratio")
    rho_max: float = Field(1.5, description="search interval of each ratio")
    tolerance: float = Field(1e-4, gt=0, description="Brent's tolerance on rho")

    @model_validator(mode="after")
    def _interval(self) -> DcSolverCalibrate:
        if not self.rho_min < 1 < self.rho_max:
            raise ValueError(f"[rho_min, rho_max] = [{self.rho_min}, {self.rho_max}] must contain 1 (no compensation)")
        return self

    def run(self, denoise: Denoiser, sigmas: Sigmas, latent: torch.Tensor, sampler: Sampler) -> CompensationRatios:
        """Ratios (one per step of sigmas) for `sampler` (a sampler.dc_solver) from the trajectories of
        latent (B, ...)."""
        if not isinstance(sampler, DcSolver):
            raise NodeError(f"sampler.dc_solver_calibrate: input 'sampler' must be a sampler.dc_solver, got "
                            f"{type(sampler).__name__}")
        truth = ground_truth(denoise, latent, sigmas, self.substeps)
        ratios = [1.0] * sigmas.steps
        state = sampler.init(latent, sigmas)
        with torch.no_grad():
            for i in range(sigmas.steps):
                if i >= sampler.dc_order:
                    ratios[i] = self.search(denoise, sampler, state, ratios, i, truth[i + 1])
                state = self.with_ratios(sampler, ratios).step(denoise, state, NOISE)
        return CompensationRatios(tuple(ratios), tuple(sigmas.values.tolist()))

    @staticmethod
    def with_ratios(sampler: DcSolver, ratios: list[float]) -> DcSolver:
        return sampler.model_copy(update={"ratios": list(ratios)})

    def search(self, denoise: Denoiser, sampler: DcSolver, state: State, ratios: list[float], i: int,
               target: torch.Tensor) -> float:
        """rho_i minimising the mean squared error of the (corrected) point step i reaches to target (B, ...)."""
        def loss(rho: float) -> float:
            trial = self.with_ratios(sampler, ratios[:i] + [rho] + ratios[i + 1:])
            nxt = trial.step(denoise, state, NOISE)
            if i + 1 < state.sigmas.numel() - 1:
                nxt = trial.step(denoise, nxt, NOISE)  # its UniC corrects the point reached; history[0] holds it
                reached = nxt.history[0]
            else:
                reached = nxt.x
            return float(((reached - target) ** 2).mean())

        from scipy.optimize import minimize_scalar  # here, not at import: the registry loads every node

        found = minimize_scalar(loss, bounds=(self.rho_min, self.rho_max), method="bounded",
                                options={"xatol": self.tolerance})
        return float(found.x) if found.fun < loss(1.0) else 1.0
