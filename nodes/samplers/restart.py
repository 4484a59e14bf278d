"""sampler.restart: Heun steps with restart intervals that jump back up in noise and descend again
(Xu et al. 2023, "Restart Sampling for Improving Generative Processes", Algorithm 1).

Design. The restarts are written into the schedule, not hidden in the sampler: `init` expands
the main schedule so that after the level nearest each segment's t_min it repeats K times
[t_max, a Karras (rho = 7) descent of `steps` Heun steps back to that level]. State.sigmas
therefore goes *up* at each restart: a step with sigma_next > sigma is the restart's forward
process, x + s_noise * sqrt(sigma_next^2 - sigma^2) * eps, and calls no model. Every other step
is a Heun step (Euler to sigma = 0), as in the paper's reference code (EDM's Heun without churn;
its restart_gamma churn is not applied). Because the levels live in State, particles can be
gathered, forked and stepped at different positions of the expanded schedule like any other.

Conventions. t_min snaps to the nearest positive level of the main schedule (as the reference
code does) and t_max is used as given; the reference code's N_Restart counts levels, so its
[N_Restart, K, t_min, t_max] is steps = N_Restart - 1 here. The default segment is the paper's
CIFAR-10 example {"0": [3, 2, 0.06, 0.30]}."""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field

from ...graph.errors import NodeError
from ..api import node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from ..core.validators import greater_than
from .heun import Heun

HEUN = Heun()  # the ODE steps between (and inside) restarts


class RestartSegment(BaseModel):
    """One restart interval: K repeats of noising from t_min up to t_max and `steps` Heun steps back."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    t_min: float = Field(gt=0, description="restart from the schedule level nearest to this sigma")
    t_max: float = Field(gt=0, validate_default=True, description="sigma the restart jumps up to")
    repeats: int = Field(1, ge=1, description="K: how many times the interval is re-run")
    steps: int = Field(2, ge=1, description="Heun steps from t_max back down to t_min")

    _above_min = greater_than("t_max", "t_min")


@node("sampler.restart", version=1)
class Restart(Sampler):
    """Implements the Restart sampler of Xu et al. (2023), Algorithm 1, with Heun steps (Karras et al. 2022)."""

    order: ClassVar[int] = 2  # the ODE steps are Heun's
    nfe_per_step: ClassVar[int] = 2  # a step to sigma = 0 is Euler (1); a restart jump up calls no model (0)
    stochastic: ClassVar[bool] = True
    segments: list[RestartSegment] = Field(
        default_factory=lambda: [RestartSegment(t_min=0.06, t_max=0.30, repeats=2, steps=2)],
        description="restart intervals, each {t_min, t_max, repeats, steps}")
    s_noise: float = Field(1.0, ge=0, description="scale of the restart noise")

    @property
    def draws_noise(self) -> bool:
        """Restart jumps add noise only when there are segments and s_noise > 0."""
        return self.s_noise > 0 and bool(self.segments)

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """Start at sigmas[0] on the schedule expanded with the restart intervals."""
        state = super().init(x, sigmas, particle)
        return state.replace(sigmas=self.expand(sigmas.values).to(device=x.device, dtype=x.dtype))

    def expand(self, main: torch.Tensor) -> torch.Tensor:
        """The main schedule (S+1,) float64 with each segment's K restart runs inserted after its t_min level."""
        positive = torch.nonzero(main > 0).squeeze(1)  # (P,)
        if positive.numel() == 0:
            return main
        after: dict[int, list[torch.Tensor]] = {}
        for seg in self.segments:
            at = int(positive[(main[positive] - seg.t_min).abs().argmin()])
            low = float(main[at])
            if not seg.t_max > low:
                raise NodeError(f"restart segment t_min={seg.t_min} snaps to schedule level {low:g}, which is not "
                                f"below its t_max={seg.t_max}; raise t_max or lower t_min")
            ramp = torch.linspace(0, 1, seg.steps + 1, dtype=torch.float64)  # (N+1,)
            down = (seg.t_max ** (1 / 7) + ramp * (low ** (1 / 7) - seg.t_max ** (1 / 7))) ** 7  # (N+1,) Karras
            down[-1] = low  # end exactly on the main level
            after.setdefault(at, []).extend([down] * seg.repeats)
        pieces = []
        for i in range(main.numel()):
            pieces.append(main[i:i + 1])
            pieces.extend(after.get(i, []))
        return torch.cat(pieces)  # (S' + 1,)

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """A restart jump where sigma_next > sigma (no model call), else a Heun step (Euler to sigma = 0)."""
        sigma, sigma_next = state.sigma, state.sigma_next  # (B,)
        up = sigma_next > sigma  # (B,)
        x = state.x  # (B, ...)
        x0 = state.x if state.denoised is None else state.denoised  # (B, ...) kept by jumping particles
        if bool(up.any()):
            eps = noise.like(state.x, state.particle, state.step)  # (B, ...)
            jump = (sigma_next ** 2 - sigma ** 2).clamp(min=0).sqrt() * self.s_noise  # (B,)
            x = torch.where(bcast(up, x), x + eps * bcast(jump, x), x)
        down = torch.nonzero(~up).squeeze(1)  # (D,)
        if down.numel() > 0:
            part = HEUN.step(denoise, state[down], noise)  # Heun's step; Euler to sigma = 0
            x, x0 = x.index_copy(0, down, part.x), x0.index_copy(0, down, part.denoised)
        return state.advance(x=x, denoised=x0)
