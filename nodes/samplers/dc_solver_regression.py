"""sampler.dc_solver_regression: DC-Solver's cascade polynomial regression (Zhao et al. 2024, Sec. 3.3).

The authors predict rho at step i (1-based) of an NFE-step schedule with guidance scale w as
    rho = sum_k c_k (i / NFE)^k,   c_k = quadratic in w / 12 whose coefficients are quadratic in NFE / 50
(k = 0..2: 27 coefficients), fitted on ratios searched at a few (NFE, w); steps i < 3 keep rho = 1.
Here samplers never see a guidance scale (guidance is a Denoiser transform), so the cascade has the
NFE level only: c_k = quadratic in NFE / 50 (9 coefficients), fitted by linear least squares (the
model is linear in its coefficients) on the searched steps of every given calibration. A departure:
a calibration per guidance scale stands in for the CFG axis."""
from __future__ import annotations

import numpy as np
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.sigmas import Sigmas
from .dc_solver import CompensationRatios

DEGREE = 2  # of both polynomials (the authors': quadratics)


def features(step: np.ndarray, nfe: np.ndarray) -> np.ndarray:
    """(n, 9): (nfe/50)^j (step/nfe)^k for k, j = 0..2, step 1-based."""
    x, level = step / nfe, nfe / 50.0
    return np.stack([level ** j * x ** k for k in range(DEGREE + 1) for j in range(DEGREE + 1)], -1)


@node("sampler.dc_solver_regression", version=1)
class DcSolverRegression(Node):
    """Predicts DC-Solver's ratios for an unseen NFE by cascade polynomial regression (Zhao et al. 2024)."""

    first_searched: int = Field(3, ge=1, description="1-based step from which ratios are searched (dc_order + 1)")

    def run(self, calibrations: list[CompensationRatios], sigmas: Sigmas) -> CompensationRatios:
        """Ratios for `sigmas` (its step count is the NFE) from calibrations on other step counts."""
        rows, targets = [], []
        for cal in calibrations:
            nfe = len(cal.ratios)
            steps = np.arange(self.first_searched, nfe + 1, dtype=np.float64)
            rows.append(features(steps, np.full_like(steps, nfe)))
            targets.append(np.asarray(cal.ratios[self.first_searched - 1:], dtype=np.float64))
        design = np.concatenate(rows) if rows else np.zeros((0, (DEGREE + 1) ** 2))
        if len({len(c.ratios) for c in calibrations}) < DEGREE + 1 or design.shape[0] < design.shape[1]:
            raise NodeError(f"sampler.dc_solver_regression: input 'calibrations' needs ratios of at least "
                            f"{DEGREE + 1} different step counts and {design.shape[1]} searched steps in all, got "
                            f"step counts {sorted(len(c.ratios) for c in calibrations)}; calibrate more NFEs")
        coeffs = np.linalg.lstsq(design, np.concatenate(targets), rcond=None)[0]  # (9,)
        nfe = sigmas.steps
        steps = np.arange(1, nfe + 1, dtype=np.float64)
        predicted = features(steps, np.full_like(steps, nfe)) @ coeffs  # (nfe,)
        ratios = [1.0 if s < self.first_searched else float(r) for s, r in zip(steps, predicted)]
        return CompensationRatios(tuple(ratios), tuple(sigmas.values.tolist()))
