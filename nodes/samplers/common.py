"""Small math shared by the solvers (k-diffusion's helpers, typed)."""
from __future__ import annotations

import math
from typing import ClassVar, Literal, NamedTuple

import torch
from pydantic import Field, ValidationInfo, field_validator

from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.state import State, bcast


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative dx/dsigma = (x - D(x, sigma)) / sigma, Karras et al. (2022) eq. 4."""
    return (x - denoised) / bcast(sigma, x)  # (B, ...)


def renoised(x: torch.Tensor, x0: torch.Tensor, x0_r: torch.Tensor, sigma: torch.Tensor,
             sigma_to: torch.Tensor) -> torch.Tensor:
    """A step's result x (B, ...) at sigma_to (B,) that re-noised with x0's noise, moved to re-noise with
    the noise (x_t - x0_r) / sigma of the re-noise estimate instead: x + (sigma_to / sigma) (x0 - x0_r)
    (CFG++, Chung et al. 2024). x itself when x0_r is x0, so plain denoisers step bit for bit as before."""
    if x0_r is x0:
        return x
    return x + bcast(sigma_to / sigma, x) * (x0 - x0_r)  # (B, ...)


class EulerPredictor(NamedTuple):
    """The first stage of a churned two-stage step (ChurnSampler.euler_predictor)."""

    x: torch.Tensor  # (B, ...) after churn
    sigma_hat: torch.Tensor  # (B,)
    sigma_next: torch.Tensor  # (B,)
    x0: torch.Tensor  # (B, ...) at sigma_hat
    d: torch.Tensor  # (B, ...) slope at sigma_hat
    x_next: torch.Tensor  # (B, ...) the Euler step
    second: torch.Tensor  # (K,) rows that take a second stage


class ChurnSampler(Sampler):
    """Base of the solvers with EDM churn (Karras et al. 2022, Alg. 2): deterministic unless s_churn > 0.

    `stochastic` stays False (the default, s_churn = 0, draws nothing); with s_churn > 0 each step
    draws noise keyed by (particle, step), so results stay reproducible and batch-split invariant,
    and `draws_noise` is True."""

    s_churn: float = Field(0.0, ge=0, description="total churn; > 0 adds noise each step (then stochastic)")
    s_tmin: float = Field(0.0, ge=0, description="churn only where sigma >= s_tmin")
    s_tmax: float | None = Field(None, gt=0, validate_default=True,
                                 description="churn only where sigma <= s_tmax; None: no upper bound")
    s_noise: float = Field(1.0, ge=0, description="scale of the churn noise (EDM S_noise)")

    @field_validator("s_tmax")
    @classmethod
    def _above_tmin(cls, value: float | None, info: ValidationInfo) -> float | None:
        """An empty churn window is a mistake, not a way to turn churn off (use s_churn = 0)."""
        low = info.data.get("s_tmin")
        if value is not None and low is not None and value < low:
            raise ValueError(f"must be >= s_tmin ({low}); to turn churn off set s_churn to 0")
        return value

    @property
    def draws_noise(self) -> bool:
        """Churn adds noise only with s_churn > 0 and s_noise > 0 (a window may still miss a given schedule)."""
        return self.s_churn > 0 and self.s_noise > 0

    def euler_predictor(self, denoise: Denoiser, state: State, noise: NoiseSource) -> EulerPredictor:
        """Alg. 2 lines 4-8: churn, then x0 and the slope d at sigma_hat and the Euler step to sigma_next;
        `second` (K,) are the rows with sigma_next > 0, which take a second stage (a step to 0 stays Euler)."""
        x, sigma_hat = self.churn(state, noise)  # (B, ...), (B,)
        sigma_next = state.sigma_next  # (B,)
        x0 = denoise(x, sigma_hat)  # (B, ...)
        d = to_d(x, sigma_hat, x0)  # (B, ...)
        x_next = x + d * bcast(sigma_next - sigma_hat, x)  # (B, ...)
        return EulerPredictor(x, sigma_hat, sigma_next, x0, d, x_next, torch.nonzero(sigma_next > 0).squeeze(1))

    def churn(self, state: State, noise: NoiseSource) -> tuple[torch.Tensor, torch.Tensor]:
        """Alg. 2 lines 4-6: x_hat (B, ...) at sigma_hat = sigma (1 + gamma) (B,).

        gamma = min(s_churn / steps, sqrt(2) - 1) where s_tmin <= sigma <= s_tmax, else 0
        (k-diffusion's rule, steps = len(sigmas) - 1)."""
        sigma = state.sigma  # (B,)
        if self.s_churn == 0:
            return state.x, sigma
        gamma = min(self.s_churn / (state.sigmas.numel() - 1), 2 ** 0.5 - 1)
        inside = (sigma >= self.s_tmin) & (sigma <= (math.inf if self.s_tmax is None else self.s_tmax))  # (B,)
        sigma_hat = torch.where(inside, sigma * (gamma + 1), sigma)  # (B,)
        eps = noise.like(state.x, state.particle, state.step) * self.s_noise  # (B, ...)
        return state.x + eps * bcast((sigma_hat ** 2 - sigma ** 2) ** 0.5, state.x), sigma_hat


def dpm_solver_stages(denoise: Denoiser, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
                      eps: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One DPM-Solver-`order` step in t = -log(sigma) (Lu et al. 2022, Algorithms 1 and 2) from x (B, ...)
    with noise estimate eps at t, and its embedded lower-order solution (None for order 1).

    Order 2 uses r1 = 1/2 and embeds DPM-Solver-1; order 3 uses r1 = 1/3, r2 = 2/3 and embeds
    DPM-Solver-2 with r1 = 1/3 (k-diffusion's DPMSolver; the pair DPM-Solver-12/23 of Sec. 3.4).
    t, t_next are (B,); every extra stage is one batched denoiser call."""
    h = t_next - t  # (B,)

    def at(v: torch.Tensor) -> torch.Tensor:
        return bcast(v, x).to(x.dtype)

    def eps_at(u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        sigma_s = (-s).exp()  # (B,)
        return (u - denoise(u, sigma_s.to(x.dtype))) / at(sigma_s)  # (B, ...)

    sigma_next = (-t_next).exp()  # (B,)
    first = x - at(sigma_next * h.expm1()) * eps  # (B, ...) DPM-Solver-1
    if order == 1:
        return first, None
    r1 = 1 / 2 if order == 2 else 1 / 3
    s1 = t + r1 * h  # (B,)
    eps_1 = eps_at(x - at((-s1).exp() * (r1 * h).expm1()) * eps, s1)  # (B, ...)
    second = first - at(sigma_next / (2 * r1) * h.expm1()) * (eps_1 - eps)  # (B, ...)
    if order == 2:
        return second, first
    r2 = 2 / 3
    s2 = t + r2 * h  # (B,)
    sigma_s2 = (-s2).exp()  # (B,)
    u2 = x - at(sigma_s2 * (r2 * h).expm1()) * eps \
        - at(sigma_s2 * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1)) * (eps_1 - eps)  # (B, ...)
    eps_2 = eps_at(u2, s2)  # (B, ...)
    third = first - at(sigma_next / r2 * (h.expm1() / h - 1)) * (eps_2 - eps)  # (B, ...)
    return third, second


NoiseKind = Literal["step", "brownian"]  # fresh normals keyed by (particle, step), or Brownian-tree increments


class NoisySampler(Sampler):
    """Base of the ancestral and SDE solvers: how much noise (eta, s_noise) and where it comes from."""

    stochastic: ClassVar[bool] = True
    eta: float = Field(1.0, ge=0, description="noise share: 1 ancestral / the reverse SDE, 0 the ODE step")
    s_noise: float = Field(1.0, ge=0, description="scale of the added noise")
    noise: NoiseKind = Field("step", description="'step': fresh normals per step (k-diffusion's default for "
                                                 "ancestral samplers); 'brownian': increments of a Brownian tree")

    @property
    def draws_noise(self) -> bool:
        """eta = 0 or s_noise = 0 is the noise-free limit."""
        return self.eta > 0 and self.s_noise > 0


def ancestral_step(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a step sigma -> sigma_next (B,) into a deterministic step to sigma_down and fresh noise
    sigma_up, sigma_down^2 + sigma_up^2 = sigma_next^2 (k-diffusion get_ancestral_step; eta = 1 is
    ancestral sampling, Ho et al. 2020, eta = 0 the ODE step, as DDIM's eta, Song et al. 2021)."""
    if eta == 0:
        return sigma_next, torch.zeros_like(sigma_next)
    up = torch.minimum(sigma_next, eta * (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)  # (B,)
    return (sigma_next ** 2 - up ** 2) ** 0.5, up


def sde_noise(noise: NoiseSource, kind: NoiseKind, particle: torch.Tensor, step: torch.Tensor, like: torch.Tensor,
              sigma: torch.Tensor, sigma_next: torch.Tensor, slot: int = 0) -> torch.Tensor:
    """N(0, I) noise (B, ...) shaped like `like` for the interval sigma -> sigma_next (B,): a normal keyed
    by (particle, step, slot), or the particle's normalised Brownian increment (nodes/core/brownian.py)."""
    if kind == "brownian":
        return noise.brownian(particle, sigma, sigma_next, tuple(like.shape[1:]), like.dtype, like.device)
    return noise.like(like, particle, step, slot)


class WrappedSampler(Sampler):
    """Base of the samplers that wrap another (time_shift, iia): order, cost, noise and adaptivity are the
    inner sampler's."""

    inner: Sampler

    @property
    def step_order(self) -> int:
        return self.inner.step_order

    @property
    def step_nfe(self) -> int:
        return self.inner.step_nfe

    def nfe_at(self, step: int) -> int:
        return self.inner.nfe_at(step)

    @property
    def draws_noise(self) -> bool:
        return self.inner.draws_noise

    @property
    def adapts_steps(self) -> bool:
        return self.inner.adapts_steps
