"""sampler.sa_solver: SA-Solver, the stochastic Adams predictor-corrector (Xue et al. 2023, "SA-Solver: Stochastic
Adams Solver for Fast Sampling of Diffusion Models"), data prediction, as diffusers' SASolverScheduler.

In lambda = -log(sigma) the variance-controlled SDE with stochasticity tau (tau = 0: the probability-flow ODE,
tau = 1: the reverse SDE) has, over [lambda_s, lambda_t], h = lambda_t - lambda_s, c = 1 + tau^2, the solution
    x_t = e^{-c h} x_s + c int e^{c (l - lambda_t)} D(l) dl + sigma_t sqrt(1 - e^{-2 tau^2 h}) z.
(diffusers' VP form, divided by alpha_t: e^{-tau^2 h} sigma_t / sigma_s = e^{-c h}.) Adams methods replace D
by its Lagrange interpolant through past outputs, so every output D_k gets the weight
    w_k = c int_{lambda_s}^{lambda_t} e^{c (l - lambda_t)} L_k(l) dl,
computed here by 16-point Gauss-Legendre quadrature in float64 (diffusers: closed forms in lambda).
The SA-Predictor interpolates D_i..D_{i-p+1} and steps from sigma_i to sigma_{i+1} with fresh noise z_i; at the
next step the SA-Corrector re-solves that same interval from the same start with the same z_i, now also
interpolating D_{i+1}, the output at the predicted point (one evaluation per step, as UniPC). At order 2
both add diffusers' (and the authors') few-step modification, of higher order than the step; it weights
D_i - D_{i-1} by about h^2 / 2 instead of the damped exponential weight, which over-corrects on large
log-sigma steps (digits model, CFG 2, 8 Karras steps, tau = 0: predictor order 2 reaches class accuracy 0.16
with it, 0.91 without; DPM++(2M) 1.0): `few_step_term=False` drops it.

Versus sampler.er_sde (Cui et al.): both are exponential integrators of a family of reverse SDEs with the
same marginals. ER-SDE parametrises the family by a noise-scale function f(sigma) and Taylor-expands D in
sigma (divided differences, no corrector); SA-Solver uses the tau-family above, Adams (Lagrange-in-lambda)
weights, and a corrector reusing the predictor's noise. tau = 0 is a deterministic multistep ODE solver
(predictor order p, corrector order c: order min(p + 1, c), measured in test_sa_solver.py).

Departures: only data prediction (diffusers' algorithm_type 'noise_prediction' is not offered); tau is a
constant over a sigma window (diffusers: a function of the timestep, default 1 on t in [200, 800]);
corrector_order 0 runs the predictor alone. A step to sigma = 0 returns D (the limit e^{-c h} -> 0)."""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .common import NoiseKind, sde_noise

GL_NODES, GL_WEIGHTS = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(16))  # on [-1, 1], float64


def adams_weights(lam: list[torch.Tensor], lam_s: torch.Tensor, lam_t: torch.Tensor,
                  c: torch.Tensor) -> list[torch.Tensor]:
    """w_k = c int_{lam_s}^{lam_t} e^{c (l - lam_t)} L_k(l) dl (B,) for the Lagrange basis L_k on the nodes
    lam (each (B,)); float64 in, float64 out."""
    xi, wq = GL_NODES.to(lam_s.device), GL_WEIGHTS.to(lam_s.device)  # (Q,)
    half = (lam_t - lam_s) / 2  # (B,)
    q = (lam_s + lam_t)[:, None] / 2 + half[:, None] * xi  # (B, Q) quadrature points
    kernel = c[:, None] * torch.exp(c[:, None] * (q - lam_t[:, None])) * wq * half[:, None]  # (B, Q)
    out = []
    for k, lk in enumerate(lam):
        basis = torch.ones_like(q)  # (B, Q)
        for m, lm in enumerate(lam):
            if m != k:
                basis = basis * (q - lm[:, None]) / (lk - lm)[:, None]
        out.append((kernel * basis).sum(1))
    return out


def few_step_term(c: torch.Tensor, h: torch.Tensor, gap: torch.Tensor) -> torch.Tensor:
    """diffusers' order-2 modification (B,): c (h^2 / 2 - (c h - 1 + e^{-c h}) / c^2) / gap, added to the newest
    output's weight and taken from the next one's; gap = lambda_s - lambda_prev (predictor) or h (corrector)."""
    return c * (h ** 2 / 2 - (c * h - 1 + torch.exp(-c * h)) / c ** 2) / gap


@node("sampler.sa_solver", version=1)
class SaSolver(Sampler):
    """Implements SA-Solver (stochastic Adams predictor-corrector, data prediction) of Xue et al. (2023)."""

    order: ClassVar[int] = 2  # of the defaults' noise-free limit (tau = 0): min(predictor_order + 1, corrector_order)
    nfe_per_step: ClassVar[int] = 1
    stochastic: ClassVar[bool] = True
    predictor_order: int = Field(2, ge=1, le=4, description="past outputs the SA-Predictor interpolates")
    corrector_order: int = Field(2, ge=0, le=4, description="outputs the SA-Corrector interpolates, the new one "
                                                            "included; 0: no corrector")
    tau: float = Field(1.0, ge=0, description="stochasticity: 0 the probability-flow ODE, 1 the reverse SDE")
    tau_sigma_min: float = Field(0.0, ge=0, description="tau applies on steps starting at sigma >= this (else 0)")
    tau_sigma_max: float | None = Field(None, gt=0, description="tau applies on steps starting at sigma <= this; "
                                                                "None: no upper bound")
    lower_order_final: bool = Field(True, description="orders min(p, steps left) and min(c, steps left + 1) "
                                                      "near the end (diffusers' lower_order_final)")
    few_step_term: bool = Field(True, description="add diffusers' (and the authors') order-2 modification; it "
                                                  "over-weights D_i - D_{i-1} on large log-sigma steps (module "
                                                  "docstring)")
    noise: NoiseKind = Field("step", description="'step': fresh normals per step (diffusers); "
                                                 "'brownian': increments of a Brownian tree")

    @property
    def step_order(self) -> int:
        """Order of the tau = 0 limit: the predictor's p, raised to at most p + 1 by a corrector of order c."""
        if self.corrector_order == 0:
            return self.predictor_order
        return min(self.predictor_order + 1, self.corrector_order)

    @property
    def draws_noise(self) -> bool:
        return self.tau > 0

    @property
    def past(self) -> int:
        """Past outputs kept: D_{i-1}.. as far as either stage reaches."""
        return max(self.predictor_order, self.corrector_order) - 1

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """History: (x the last predictor started from, D_{i-1}, ..., D_{i-past}), zeros before they exist."""
        return super().init(x, sigmas, particle).replace(history=(torch.zeros_like(x),) * (1 + self.past))

    def tau_at(self, sigma: torch.Tensor) -> torch.Tensor:
        """tau (B,) float64 of the steps starting at sigma (B,)."""
        hi = float("inf") if self.tau_sigma_max is None else self.tau_sigma_max
        inside = (sigma >= self.tau_sigma_min) & (sigma <= hi)  # (B,)
        return inside.double() * self.tau  # float64 (a Python-scalar where() would round tau to float32)

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """SA-Corrector on the interval the last step predicted, then the SA-Predictor from its result."""
        sigma, steps = state.sigma, state.sigmas.numel() - 1  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        x_prev, *past = state.history  # (B, ...) each; past[k - 1] is D_{i-k}
        outputs = [x0, *past]  # newest first
        x = state.x
        if self.corrector_order > 0:
            i = state.step - 1  # (B,) the interval being corrected starts at step i
            order = torch.minimum(torch.clamp(i + 2, max=self.corrector_order), self.final_cap(i, steps, 1))
            corrected = self.update(x_prev, outputs, state, i, order, corrector=True, noise=noise)
            x = torch.where(bcast(state.step > 0, x), corrected, x)  # (B, ...)
        order = torch.minimum(torch.clamp(state.step + 1, max=self.predictor_order), self.final_cap(state.step, steps, 0))
        x_next = self.update(x, outputs, state, state.step, order, corrector=False, noise=noise)
        x_next = torch.where(bcast(state.sigma_next == 0, x0), x0, x_next)  # (B, ...) the limit at sigma = 0
        return state.advance(x=x_next, denoised=x0, history=(x, *outputs[:self.past]))

    def final_cap(self, i: torch.Tensor, steps: int, extra: int) -> torch.Tensor:
        """The lower-order-final bound (B,) for a stage on the interval starting at step i."""
        if not self.lower_order_final:
            return torch.full_like(i, 4)
        return (steps - i + extra).clamp(min=1)

    def update(self, x: torch.Tensor, outputs: list[torch.Tensor], state: State, i: torch.Tensor,
               order: torch.Tensor, corrector: bool, noise: NoiseSource) -> torch.Tensor:
        """One Adams step (B, ...) from x at sigmas[i] to sigmas[i + 1], per-particle order (B,). The predictor
        interpolates outputs[0..] at steps i, i-1, ...; the corrector outputs[0] at i + 1 and outputs[1..] at
        i, i-1, ...; both draw the noise keyed by step i."""
        sig = state.sigmas
        s, t = sig[i.clamp(min=0)].double(), sig[(i + 1).clamp(min=0)].double()  # (B,)
        t = torch.where(t > 0, t, s)  # (B,) keeps the unused update of a step to 0 finite
        lam_s, lam_t = -s.log(), -t.log()  # (B,)
        h = lam_t - lam_s  # (B,)
        tau = self.tau_at(s.to(sig.dtype))  # (B,)
        c = 1 + tau ** 2  # (B,)
        # lambdas of outputs[k], at step (state.step - k): for the corrector nodes[0] is lam_t
        nodes = [-(sig[(state.step - k).clamp(min=0)].double().log()) for k in range(len(outputs))]  # (B,) each
        weights = [torch.zeros_like(s) for _ in outputs]  # (B,) each
        for o in range(1, max(self.predictor_order, self.corrector_order) + 1):
            ws = adams_weights(nodes[:o], lam_s, lam_t, c)
            if o == 2 and self.few_step_term:
                gap = h if corrector else nodes[0] - nodes[1]
                extra = few_step_term(c, h, torch.where(gap != 0, gap, 1.0))
                ws = [ws[0] + extra, ws[1] - extra]
            for k, w in enumerate(ws):
                weights[k] = torch.where(order == o, w, weights[k])
        out = bcast(torch.exp(-c * h).to(x.dtype), x) * x  # (B, ...)
        out = out + sum(bcast(w.to(x.dtype), x) * d for w, d in zip(weights, outputs))
        std = t * torch.sqrt(-torch.expm1(-2 * tau ** 2 * h))  # (B,)
        if bool((std > 0).any()):
            z = sde_noise(noise, self.noise, state.particle, i.clamp(min=0), x, sig[i.clamp(min=0)],
                          sig[i.clamp(min=0) + 1])  # (B, ...)
            out = out + z * bcast(std.to(x.dtype), x)
        return out
