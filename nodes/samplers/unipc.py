"""sampler.unipc: UniPC, the unified predictor-corrector multistep solver (Zhao et al. 2023).

In lambda = -log(sigma), h = lambda' - lambda, the data-prediction update of diffusers'
UniPCMultistepScheduler divided by alpha' is
    x' = (sigma' / sigma) x - expm1(-h) m0 - B(h) sum_k rho_k D_k,    D_k = (m_k - m0) / r_k,
with r_k = (lambda_k - lambda) / h for the k-th previous output m_k, B(h) = -h (bh1) or
expm1(-h) (bh2), and rho solving the order conditions R rho = b (Zhao et al. 2023).
The noise-prediction form is x' = x - (sigma - sigma') m0 - sigma' B(h) sum rho_k D_k with
B(h) = h or expm1(h). UniC re-solves the step just taken with the model output at its end
(which the next predictor needs anyway), so the corrector costs no evaluation and raises the
order of UniP-p to p + 1.

History, newest first: the sample the last predictor started from, then p past outputs."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .vp_common import LOWER_ORDER_FINAL_DOC, LowerOrderFinal, effective_order, past_sigmas


@node("sampler.unipc", version=1)
class UniPC(Sampler):
    """Implements UniPC (UniP-p predictor and UniC corrector, variants B1 and B2) of Zhao et al. (2023)."""

    order: ClassVar[int] = 3  # the default, UniP-2 with UniC: order p + 1 (without corrector: p)
    nfe_per_step: ClassVar[int] = 1
    solver_order: int = Field(2, ge=1, le=3, description="p of UniP-p (diffusers solver_order)")
    variant: Literal["bh1", "bh2"] = Field("bh2", description="B(h) = h (bh1) or e^h - 1 (bh2)")
    corrector: bool = Field(True, description="apply UniC after every step (free: reuses the next evaluation)")
    corrector_skip: tuple[int, ...] = Field((), description="steps whose result UniC leaves alone "
                                                            "(diffusers disable_corrector)")
    prediction: Literal["data", "noise"] = Field("data", description="solve for x0 (diffusers predict_x0) or eps")
    lower_order_final: LowerOrderFinal = Field("always", description=LOWER_ORDER_FINAL_DOC)

    @property
    def step_order(self) -> int:
        """UniP-p is order p; UniC raises it to p + 1."""
        return self.solver_order + int(self.corrector)

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """History (x_prev, m_1..m_p), zeros before the first step."""
        zeros = torch.zeros_like(x)  # (B, ...)
        return super().init(x, sigmas, particle).replace(history=(zeros,) * (self.solver_order + 1))

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """UniC on the sample the last step produced, then UniP from it."""
        p, sigma = self.solver_order, state.sigma  # (B,)
        x0 = denoise(state.x, sigma)  # (B, ...)
        m = x0 if self.prediction == "data" else (state.x - x0) / bcast(sigma, x0)  # (B, ...)
        x_prev, *past = state.history  # (B, ...) each; past[k - 1] is the output k steps back
        older = past_sigmas(state, p)  # sigmas of past[0..p-1]
        x = state.x
        if self.corrector:
            last = (state.step - 1).clamp(min=0)  # (B,)
            fix = (state.step > 0) & ~torch.isin(last, torch.tensor(self.corrector_skip, dtype=last.dtype,
                                                                     device=last.device))  # (B,)
            corrected = self.update(x_prev, past[0], past[1:], m, older[0], sigma, older[1:],
                                    effective_order(last, state.sigmas, p, self.lower_order_final))
            x = torch.where(bcast(fix, x), corrected, x)  # (B, ...)
        order = effective_order(state.step, state.sigmas, p, self.lower_order_final)  # (B,)
        m = self.compensated(state, m, past)  # (B, ...)
        x_next = self.update(x, m, past[:p - 1], None, sigma, state.sigma_next, older[:p - 1], order)
        return state.advance(x=x_next, denoised=x0, history=(x, m, *past[:-1]))

    def compensated(self, state: State, m: torch.Tensor, past: list[torch.Tensor]) -> torch.Tensor:
        """The output (B, ...) the predictor and the history use in place of m, the output at state.sigma
        (after UniC used m); `past` as in `step`. m itself here; sampler.dc_solver's dynamic compensation."""
        return m

    def update(self, x: torch.Tensor, m0: torch.Tensor, past: list[torch.Tensor], model_t: torch.Tensor | None,
               sigma: torch.Tensor, sigma_t: torch.Tensor, past_sigma: list[torch.Tensor],
               order: torch.Tensor) -> torch.Tensor:
        """x (B, ...) at sigma (B,) to sigma_t with outputs m0 at sigma and `past` at past_sigma:
        UniP when model_t is None, else UniC with model_t, the output at sigma_t. Each particle
        uses its own order (B,); coefficients are solved in float64."""
        f64, corrector = torch.float64, model_t is not None
        s, t = sigma.to(f64), sigma_t.to(f64)  # (B,)
        h = torch.log(s / t)  # (B,) +inf for sigma_t = 0, where the order is 1
        finite = torch.isfinite(h)
        hh = torch.where(finite, -h if self.prediction == "data" else h, -1.0)  # keeps unused branches finite
        b_h = hh if self.variant == "bh1" else hh.expm1()  # (B,)
        if self.prediction == "data":
            base = bcast((t / s).to(x.dtype), x) * x - bcast((-h).expm1().to(x.dtype), x) * m0  # (B, ...)
            scale = b_h
        else:
            base = x - bcast((s - t).to(x.dtype), x) * m0  # (B, ...)
            scale = t * b_h
        b, phi, fact = [], hh.expm1() / hh - 1, 1.0  # b_k = k! phi_{k+1}(hh) / B(h), diffusers' recursion
        for k in range(1, len(past) + 2):
            b.append(phi * fact / b_h)
            fact *= k + 1
            phi = phi / hh - 1 / fact
        rks = [torch.where(finite & (order > k + 1), torch.log(s / ps) / h, -1.0 - k)  # (B,) unused: distinct
               for k, ps in enumerate(past_sigma)]
        diffs = [(mk - m0) / bcast(r.to(x.dtype), x) for mk, r in zip(past, rks)]  # (B, ...) D_k
        if corrector:
            diffs.append(model_t - m0)  # D_t, column r = 1
        weights = [torch.zeros_like(s) for _ in diffs]  # (B,) each: B(h) rho_k of each particle's order
        for o in range(1 if corrector else 2, len(past) + 2):
            cols = rks[:o - 1] + ([torch.ones_like(s)] if corrector else [])  # (B,) each
            if len(cols) == 1:
                rho = [torch.full_like(s, 0.5)]  # UniP-2 and UniC-1 use 1/2 (diffusers, original UniPC)
            else:
                lhs = torch.stack([torch.stack([c ** j for c in cols], -1) for j in range(len(cols))], -2)  # (B, n, n)
                rho = list(torch.linalg.solve(lhs, torch.stack(b[:len(cols)], -1)).unbind(-1))
            slots = list(range(o - 1)) + ([len(diffs) - 1] if corrector else [])
            for k, r in zip(slots, rho):
                weights[k] = torch.where(order == o, r * scale, weights[k])
        return base - sum(bcast(w.to(x.dtype), x) * d for w, d in zip(weights, diffs))  # (B, ...)
