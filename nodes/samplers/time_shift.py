"""sampler.time_shift: the Time-Shift Sampler around any sampler (Li et al. 2023, arXiv 2305.15583, ICLR 2024).

Exposure bias: a sampled x at nominal level sigma is not distributed like the training inputs
at sigma. The Time-Shift Sampler calls the network at the level whose forward-process variance
best matches the variance of x, searched in a window around sigma, and only while sigma is
above a cutoff; the solver's own coefficients keep the nominal levels. That is what the authors'
DEIS integration does (their eps_fn shifts the model call only); their DDIM/PNDM code instead moves
the level a step lands on, which needs the solver's internals. Only the former composes with any
sampler, so this wrapper implements it. The rule, per particle, in VP terms (the paper's):
    sigma_s = argmin over the window of | Var(x_vp) - (1 - alpha_bar(sigma_s)) |,
Var over the elements of one sample, x_vp = x / sqrt(1 + sigma^2), 1 - alpha_bar = s^2 / (1 + s^2).
The mismatch is monotone in sigma_s, so over a continuous window the argmin is the exact match
sqrt(v / (1 - v)) (v = Var(x_vp); infinite for v >= 1) clamped to the window. Windows are in
log sigma: |log sigma_s - log sigma| <= window (a window of w discrete timesteps around t is
about w/2 * d log sigma / dt; 0.005 per timestep near the middle of SD's schedule).

space 'vp' keeps the network's VP input fixed (a VP network sees the same x_vp with the
shifted time, as in the paper), i.e. calls D(x * alpha(sigma) / alpha(sigma_s), sigma_s);
space 've' matches Var(x) to sigma_s^2 and calls D(x, sigma_s) (VE / EDM networks)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..api import Node, node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast
from .common import WrappedSampler
from .vp_common import vp_alpha

Space = Literal["vp", "ve"]


@node("sampler.time_shift", version=1)
class TimeShift(Node):
    """Implements the Time-Shift Sampler of Li et al. (2023) around any sampler."""

    window: float = Field(0.05, ge=0, description="largest |log sigma_s - log sigma| (0: no shift)")
    cutoff_sigma: float = Field(1.0, ge=0, description="shift only model calls at sigma > cutoff_sigma")
    space: Space = Field("vp", description="'vp': VP variance rule, VP input kept (paper); 've': VE rule and input")

    def run(self, sampler: Sampler) -> Sampler:
        """`sampler` with every model call at the variance-matched level."""
        return TimeShifted(inner=sampler, window=self.window, cutoff_sigma=self.cutoff_sigma, space=self.space)


class TimeShifted(WrappedSampler):
    """A sampler whose denoiser calls see the time-shifted noise level (Li et al. 2023); order, cost and
    noise are the inner sampler's."""

    window: float
    cutoff_sigma: float
    space: Space

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """The inner sampler's state: the wrapper adds none."""
        return self.inner.init(x, sigmas, particle)

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """The inner sampler's step with the shifted denoiser."""
        return self.inner.step(ShiftedDenoiser(denoise, self), state, noise)


class ShiftedDenoiser(Denoiser):
    """D at the variance-matched level: one batched call of the wrapped denoiser."""

    def __init__(self, inner: Denoiser, rule: TimeShifted):
        self.inner, self.rule = inner, rule

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        shifted = shifted_sigma(x, sigma, self.rule.window, self.rule.cutoff_sigma, self.rule.space)  # (B,)
        if self.rule.space == "vp":
            x = x * bcast(vp_alpha(sigma) / vp_alpha(shifted), x)  # (B, ...) same x_vp, shifted time
        return self.inner(x, shifted)


def shifted_sigma(x: torch.Tensor, sigma: torch.Tensor, window: float, cutoff: float, space: Space) -> torch.Tensor:
    """The time-shifted level (B,) of x (B, ...) at nominal sigma (B,): the variance match clamped to
    [sigma e^-window, sigma e^window]; sigma itself at or below the cutoff."""
    var = x.reshape(x.shape[0], -1).var(dim=1)  # (B,) over one sample's elements
    if space == "vp":
        v = var * vp_alpha(sigma) ** 2  # (B,) Var(x_vp)
        match = torch.sqrt(v / (1 - v).clamp(min=torch.finfo(x.dtype).tiny))  # (B,) +large for v >= 1
    else:
        match = var.sqrt()  # (B,)
    factor = torch.exp(torch.tensor(window, dtype=sigma.dtype, device=sigma.device))
    clamped = torch.minimum(torch.maximum(match, sigma / factor), sigma * factor)  # (B,)
    return torch.where(sigma > cutoff, clamped, sigma)
