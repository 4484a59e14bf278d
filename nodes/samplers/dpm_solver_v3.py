"""sampler.dpm_solver_v3: DPM-Solver-v3's multistep predictor-corrector (Zheng et al. 2023, NeurIPS).

The update and its integrals are in ems.py. Per step, in lambda = -log(sigma): f = (1 - l) x - D at
the new point; UniC-style correction of the point just reached (the corrector re-solves the last step
with the new f among its points, `corrector_pseudo` adding one pseudo order, as the authors'
c_pseudo); then the predictor from the corrected point. The corrector keeps f (the authors keep
N - l x), so the x0 a final step to sigma = 0 returns is (1 - l) x - f at the corrected x.

Derivatives of g: the polynomial through the step's points (exact Taylor coefficients of the
interpolant) or, `pseudo`, the Newton divided differences f[a..a_k] taken as Taylor coefficients
(the paper's pseudo-order, a lower-order but more stable estimate).

Without statistics (l = 1, s = 0, b = 0) g = -D and the predictor of order p is the original
DPM-Solver++ multistep (Lu et al. 2022b; second order: its `taylor` update, diffusers' 'heun'), tested to
round-off; at p = 3 with the exact quadratic term 2 phi_3 D2 where the original and diffusers weight
D2 by phi_3 (order 2 measured, see docs/ARCHITECTURE.md on dpmpp_3m).

History, newest first: the sample the last predictor started from, then p past f values."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field, PrivateAttr

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State
from .ems import F64, EmsIntegrals, ModelStatistics, interp
from .vp_common import LOWER_ORDER_FINAL_DOC, LowerOrderFinal, effective_order

_NEUTRAL = EmsIntegrals(ModelStatistics.neutral())


def polynomial_weights(lams: list[float], pseudo: bool) -> torch.Tensor:
    """W (n, n+1), n = len(lams) - 1: coefficient c_k of (r - lams[0])^k (k = 1..n) of g is sum_j W[k-1, j] g_j.
    Exact interpolation (a Vandermonde solve) or the pseudo-order divided differences f[lams_0..lams_k]."""
    n = len(lams) - 1
    lam = torch.tensor(lams, dtype=F64)
    w = torch.zeros(n, n + 1, dtype=F64)
    if n == 0:
        return w
    if pseudo:
        for k in range(1, n + 1):
            for j in range(k + 1):
                w[k - 1, j] = 1 / math.prod(float(lam[j] - lam[i]) for i in range(k + 1) if i != j)
        return w
    dl = lam[1:] - lam[0]  # (n,)
    inv = torch.linalg.inv(torch.stack([dl ** k for k in range(1, n + 1)], -1))  # (n, n): c = inv (g_j - g_0)
    w[:, 1:] = inv
    w[:, 0] = -inv.sum(1)
    return w


@node("sampler.dpm_solver_v3", version=1)
class DpmSolverV3(Sampler):
    """Implements DPM-Solver-v3's multistep predictor-corrector with empirical model statistics (Zheng et al. 2023)."""

    order: ClassVar[int] = 2  # the default: order 2 with the corrector (see step_order)
    nfe_per_step: ClassVar[int] = 1
    solver_order: int = Field(2, ge=1, le=3, description="predictor order p (the paper uses 1-3)")
    predictor_pseudo: bool = Field(False, description="pseudo-order derivative estimates in the predictor")
    corrector: bool = Field(True, description="correct each point with the evaluation at it (free, UniC-style)")
    corrector_pseudo: bool = Field(False, description="the corrector takes one more point (order + 1, pseudo; "
                                                       "the authors' c_pseudo)")
    lower_order_final: LowerOrderFinal = Field("always", description=LOWER_ORDER_FINAL_DOC)
    _integrals: EmsIntegrals = PrivateAttr(_NEUTRAL)

    @property
    def step_order(self) -> int:
        """p; a pseudo estimate caps its part at 2 (f[a, a_1] is only an O(h) estimate of g'); the corrector
        sets the order to its own, at most the predictor's + 1 (measured: tests/test_dpm_solver_v3.py)."""
        p = self.solver_order
        predictor = min(p, 2) if self.predictor_pseudo else p
        points = p + int(self.corrector_pseudo)
        if not self.corrector or points < 2:
            return predictor
        return min(min(points, 2) if self.corrector_pseudo else points, predictor + 1)

    def run(self, statistics: ModelStatistics | None = None) -> Sampler:
        """This solver using `statistics` (from sampler.dpm_solver_v3_statistics); none: l = 1, s = 0, b = 0."""
        configured = self.model_copy()
        configured._integrals = _NEUTRAL if statistics is None else EmsIntegrals(statistics)
        return configured

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """History (x_prev, f_1..f_p), zeros before the first step."""
        return super().init(x, sigmas, particle).replace(history=(torch.zeros_like(x),) * (self.solver_order + 1))

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """Corrector on the point the last step reached, then the predictor from it (or x0 at sigma 0)."""
        p, ems = self.solver_order, self._integrals
        x0 = denoise(state.x, state.sigma)  # (B, ...)
        lam = -torch.log(state.sigmas.to(F64))  # (S+1,) +inf at sigma 0
        l_now = interp(ems.stats, ems.stats.l, lam[state.step.cpu()]).to(x0)  # (B, ...) or (B,)
        l_now = l_now.reshape(l_now.shape[0], *([1] * (x0.ndim - l_now.ndim)), *l_now.shape[1:])
        f = (1 - l_now) * state.x - x0  # (B, ...)
        x_prev, *past = state.history  # (B, ...) each; past[k - 1]: f of k steps back
        x, x_next = state.x.clone(), torch.empty_like(state.x)
        last = (state.step - 1).clamp(min=0)
        c_orders = effective_order(last, state.sigmas, p, self.lower_order_final) + int(self.corrector_pseudo)
        orders = effective_order(state.step, state.sigmas, p, self.lower_order_final)  # (B,)
        for k in torch.unique(state.step).tolist():
            rows = (state.step == k).nonzero().squeeze(1)  # (R,)
            if self.corrector and k > 0 and int(c_orders[rows[0]]) > 1:
                n = int(c_orders[rows[0]])
                pts = [k - 1, k] + [k - 1 - j for j in range(1, n - 1)]
                values = [past[0][rows], f[rows]] + [past[j][rows] for j in range(1, n - 1)]
                x[rows] = self.advance_from(x_prev[rows], values, [float(lam[i]) for i in pts], float(lam[k]),
                                            self.corrector_pseudo)
            if not torch.isfinite(lam[k + 1]):
                x_next[rows] = (1 - l_now[rows]) * x[rows] - f[rows]  # x0 at the corrected point
                continue
            n = int(orders[rows[0]])
            values = [f[rows]] + [past[j][rows] for j in range(n - 1)]
            x_next[rows] = self.advance_from(x[rows], values, [float(lam[k - j]) for j in range(n)],
                                             float(lam[k + 1]), self.predictor_pseudo)
        return state.advance(x=x_next, denoised=x0, history=(x, f, *past[:-1]))

    def advance_from(self, x: torch.Tensor, fs: list[torch.Tensor], lams: list[float], t: float,
                     pseudo: bool) -> torch.Tensor:
        """x (R, ...) at lams[0] to lambda t with f values fs (R, ...) at lams: the DPM-Solver-v3 update."""
        ems, a = self._integrals, lams[0]
        step = ems.step(a, t, len(lams))
        at = torch.tensor(lams, dtype=F64)
        scale, shift = torch.exp(-ems.sig(a, at)), ems.beta(a, at)  # (n+1, *shape) each
        g = [sc.to(x) * fj - sh.to(x) for sc, sh, fj in zip(scale, shift, fs)]  # (R, ...) each
        out = step.decay.to(x) * x - step.moments[0].to(x) * g[0] - step.offset.to(x)
        weights = polynomial_weights(lams, pseudo)  # (n, n+1)
        for k in range(1, len(lams)):
            c = sum(float(weights[k - 1, j]) * gj for j, gj in enumerate(g))  # (R, ...)
            out = out - step.moments[k].to(x) * c
        return out  # (R, ...)
