"""sampler.hb: Polyak's heavy-ball momentum on a base numerical method (Wizadwongsa et al. 2023,
"Diffusion Sampling with Momentum for Mitigating Divergence Artifacts", arXiv 2307.11118, Sec. 4).

A base method steps x_{n+1} = x_n + delta z_n with z_n its combination of slopes (eps, the
derivative dx/dsigma). HB replaces z_n by a velocity, eq. 10-11:
    v_{n+1} = (1 - beta) v_n + beta z_n,    x_{n+1} = x_n + delta v_{n+1},
started at v = z_0 (the authors' code), which widens the method's stability region and so damps
the divergence artifacts of few-step high-order sampling. beta = 1 is the base method exactly;
beta < 1 is first order (the paper's Theorem 1), whatever the base.
Bases: 'euler' (DDIM, sampler.euler), 'plms' (the Adams-Bashforth weights of PLMS / sampler.ipndm,
`solver_order` of them; its step to sigma 0 returns x0, as sampler.ipndm) and 'dpmpp_2m'
(DPM-Solver++(2M), with the momentum on its extrapolated data estimate D0 + D1/2 and the
exponential-integrator step; as the authors' MomentumDPMSolverMultistepScheduler, only the
second-order updates carry momentum, started at their first one; the first step and the step to
sigma 0 stay DPM-Solver++(1))."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .common import to_d
from .dpmpp_2m import dpmpp_2m_estimate, dpmpp_step
from .ipndm import AB, ab_slope
from .momentum import heavy_ball

Base = Literal["euler", "plms", "dpmpp_2m"]
BASE_ORDER = {"euler": 1, "plms": 2, "dpmpp_2m": 2}  # plms: fixed weights on non-uniform grids (sampler.ipndm)


@node("sampler.hb", version=1)
class HeavyBall(Sampler):
    """Implements HB momentum on a base method, eq. 10-11 of Wizadwongsa et al. (2023)."""

    order: ClassVar[int] = 1  # beta < 1 (Theorem 1); beta = 1 is the base's order (step_order)
    nfe_per_step: ClassVar[int] = 1
    base: Base = Field("plms", description="'euler' (DDIM), 'plms' (PLMS / iPNDM weights) or 'dpmpp_2m'")
    beta: float = Field(0.8, gt=0, le=1, description="momentum: 1 is the base method, smaller damps more")
    solver_order: int | None = Field(None, ge=1, le=4, validate_default=True,
                                     description="'plms' only: Adams-Bashforth order (default 4)")

    @field_validator("solver_order")
    @classmethod
    def _plms_only(cls, value: int | None, info: ValidationInfo) -> int | None:
        """solver_order means something only for the 'plms' base (default 4 there)."""
        base = info.data.get("base")
        if value is not None and base != "plms":
            raise ValueError(f"solver_order applies to base 'plms' only, not '{base}'; remove it")
        return 4 if base == "plms" and value is None else value

    @property
    def step_order(self) -> int:
        """1 with momentum (beta < 1); the base's order at beta = 1."""
        if self.beta < 1:
            return 1
        return min(self.solver_order, 2) if self.base == "plms" else BASE_ORDER[self.base]

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """History: the velocity, then the base's own (plms: last solver_order - 1 slopes; dpmpp_2m: last x0)."""
        state = super().init(x, sigmas, particle)
        extra = self.solver_order - 1 if self.base == "plms" else int(self.base == "dpmpp_2m")
        return state.replace(history=tuple(torch.zeros_like(x) for _ in range(1 + extra)))

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """One base step whose direction is the heavy-ball velocity."""
        x0 = denoise(state.x, state.sigma)  # (B, ...)
        velocity, past = state.history[0], state.history[1:]  # (B, ...), base history
        if self.base == "dpmpp_2m":
            x0_d, second = dpmpp_2m_estimate(state, x0, past[0])  # (B, ...), (B,)
            v = heavy_ball(velocity, x0_d, self.beta, state.step <= 1)  # (B, ...)
            x = dpmpp_step(state, torch.where(bcast(second, v), v, x0_d))  # (B, ...)
            return state.advance(x=x, denoised=x0, history=(v, x0))
        d = to_d(state.x, state.sigma, x0)  # (B, ...)
        z = d if self.base == "euler" else ab_slope(AB, state.step.clamp(max=self.solver_order - 1), d, past)
        v = heavy_ball(velocity, z, self.beta, state.step == 0)  # (B, ...)
        x = state.x + v * bcast(state.sigma_next - state.sigma, state.x)  # (B, ...)
        if self.base == "plms":
            x = torch.where(bcast(state.sigma_next == 0, x), x0, x)  # (B, ...) sampler.ipndm's last step
            past = (d, *past[:-1]) if past else ()
        return state.advance(x=x, denoised=x0, history=(v, *past))
