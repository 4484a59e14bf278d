"""sampler.dpm_adaptive: DPM-Solver-12/23 with an embedded error estimate and PID step-size control
(Lu et al. 2022, Sec. 3.4 and App. C; k-diffusion sample_dpm_adaptive).

How it fits the Sampler contract (a departure from k-diffusion, on purpose):
- Each `step` integrates one interval of the given schedule, sigmas[i] -> sigmas[i+1], with as
  many adaptive sub-steps as that particle needs (one attempt = `solver_order` batched denoiser
  calls over the particles still under way). So between steps every particle sits exactly on
  the schedule (search strategies can resample there) and run_steps needs nothing special.
  k-diffusion's sample_dpm_adaptive(sigma_min, sigma_max) is one interval: give a schedule
  [sigma_max, sigma_min] (or [sigma_max, sigma_min, 0] for a final x = x0 step, as every
  other solver here ends); with more levels they act as checkpoints the solver must hit.
- Step-size control is per particle: the error norm is taken over each particle's elements,
  not over the batch, so a particle's trajectory does not depend on its batch-mates
  (batch-split invariance). With one particle it is exactly k-diffusion's controller.
- The controller's state (step size h, the two previous inverse errors, the previous lower-order
  solution) is State.history, carried from interval to interval.
- NFE per step is not fixed: a multiple of `nfe_per_step` (attempts x order); a step to
  sigma = 0 is x = x0, one evaluation."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .common import dpm_solver_stages

MAX_ATTEMPTS = 100_000  # per step; a controller that never gets there has met a non-finite error
DONE_MARGIN = 1e-5  # in lambda: k-diffusion stops once within this of the interval's end


@node("sampler.dpm_adaptive", version=1)
class DpmAdaptive(Sampler):
    """Implements DPM-Solver-12 and -23 with adaptive step size (Lu et al. 2022, App. C) and PID step control."""

    order: ClassVar[int] = 3  # of its accepted solution (solver_order 3)
    nfe_per_step: ClassVar[int] = 3  # per attempt (= solver_order); a step makes a multiple of it
    adaptive: ClassVar[bool] = True  # it picks its own sub-steps: accuracy follows rtol/atol, not the schedule
    solver_order: int = Field(3, ge=2, le=3, description="3: DPM-Solver-23; 2: DPM-Solver-12")
    rtol: float = Field(0.05, gt=0)
    atol: float = Field(0.0078, gt=0)
    h_init: float = Field(0.05, gt=0, description="first sub-step in lambda = -log(sigma)")
    pcoeff: float = Field(0.0, description="PID proportional gain (0, 1, 0: an integral controller)")
    icoeff: float = Field(1.0)
    dcoeff: float = Field(0.0)
    accept_safety: float = Field(0.81, gt=0, description="accept a sub-step when the step factor >= this")

    @property
    def step_order(self) -> int:
        """The order of the accepted (higher-order) solution."""
        return self.solver_order

    @property
    def step_nfe(self) -> int:
        """Evaluations per attempt: one per stage."""
        return self.solver_order

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """History: h (B,), inverse errors (B, 2) (0: none yet), previous lower-order solution (B, ...)."""
        state = super().init(x, sigmas, particle)
        b = x.shape[0]
        h = torch.full((b,), self.h_init, dtype=torch.float64, device=x.device)  # (B,)
        return state.replace(history=(h, torch.zeros(b, 2, dtype=torch.float64, device=x.device), x))

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """Integrate every particle from its sigma to its sigma_next; x = x0 where sigma_next = 0."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        h, errs, x_prev = state.history  # (B,), (B, 2), (B, ...)
        x, x0 = state.x, torch.zeros_like(state.x)  # (B, ...)
        s = -sigma.to(torch.float64).log()  # (B,) lambda now
        s_end = -sigma_next.to(torch.float64).log()  # (B,) inf where sigma_next = 0
        active = (sigma_next > 0) & (s < s_end - DONE_MARGIN)  # (B,)
        seen = ~active  # (B,) particles whose x0 at the start is known (after this call)
        idle = seen.nonzero().squeeze(1)  # (I,) stepping to sigma = 0, or an interval of length ~0
        if idle.numel() > 0:
            x0 = x0.index_copy(0, idle, denoise(x[idle], sigma[idle]))
            x = torch.where(bcast(sigma_next == 0, x), x0, x)  # (B, ...)
        for _ in range(MAX_ATTEMPTS):
            go = active.nonzero().squeeze(1)  # (A,)
            if go.numel() == 0:
                return state.advance(x=x, denoised=x0, history=(h, errs, x_prev))
            x_g, s_g, h_g = x[go], s[go], h[go]  # (A, ...), (A,), (A,)
            t_g = torch.minimum(s_end[go], s_g + h_g)  # (A,)
            sigma_g = (-s_g).exp()  # (A,)
            x0_g = denoise(x_g, sigma_g.to(x.dtype))  # (A, ...)
            eps = (x_g - x0_g) / bcast(sigma_g, x_g).to(x.dtype)  # (A, ...)
            high, low = dpm_solver_stages(denoise, x_g, s_g, t_g, eps, self.solver_order)  # (A, ...) each
            scale = torch.maximum(low.abs(), x_prev[go].abs()) * self.rtol  # (A, ...)
            ratio = ((low - high) / scale.clamp(min=self.atol)).flatten(1)  # (A, E)
            error = ratio.to(torch.float64).norm(dim=1) / math.sqrt(ratio.shape[1])  # (A,)
            accept, factor, errs_g = self.control(error, errs[go])  # (A,), (A,), (A, 2)
            first = ~seen[go]  # (A,) record x0 at the start of the interval
            x0 = x0.index_copy(0, go, torch.where(bcast(first, x0_g), x0_g, x0[go]))
            seen = seen.index_fill(0, go[first], True)
            keep = bcast(accept, x_g)  # (A, 1, ...)
            x = x.index_copy(0, go, torch.where(keep, high, x_g))
            x_prev = x_prev.index_copy(0, go, torch.where(keep, low, x_prev[go]))
            s = s.index_copy(0, go, torch.where(accept, t_g, s_g))
            h = h.index_copy(0, go, h_g * factor)
            errs = errs.index_copy(0, go, errs_g)
            active = active.index_copy(0, go, s[go] < s_end[go] - DONE_MARGIN)
            if not bool(torch.isfinite(error).all()):
                raise NodeError(f"sampler.dpm_adaptive: the error estimate is not finite at sigma "
                                f"{sigma_g[~torch.isfinite(error)].tolist()[:4]}; the denoiser returned inf/NaN")
        raise NodeError(f"sampler.dpm_adaptive: no progress after {MAX_ATTEMPTS} attempts in one step; "
                        f"raise rtol/atol (now {self.rtol}/{self.atol})")

    def control(self, error: torch.Tensor, errs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """PID step-size factor per particle (k-diffusion PIDStepSizeController, with its atan limiter):
        (accept (A,), factor (A,), inverse errors after (A, 2))."""
        k = self.solver_order
        b1 = (self.pcoeff + self.icoeff + self.dcoeff) / k
        b2 = -(self.pcoeff + 2 * self.dcoeff) / k
        b3 = self.dcoeff / k
        inv = 1 / (error + 1e-8)  # (A,)
        fresh = errs[:, 0] == 0  # (A,) first proposal: the history is this error, three times
        e1 = torch.where(fresh, inv, errs[:, 0])  # (A,)
        e2 = torch.where(fresh, inv, errs[:, 1])  # (A,)
        factor = 1 + torch.atan(inv ** b1 * e1 ** b2 * e2 ** b3 - 1)  # (A,)
        accept = factor >= self.accept_safety  # (A,)
        errs = torch.where(accept[:, None], torch.stack([inv, e1], 1), torch.stack([e1, e2], 1))  # (A, 2)
        return accept, factor, errs
