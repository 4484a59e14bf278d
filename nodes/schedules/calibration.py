"""Calibration data shared by the schedule and solver searches (schedule.gits, schedule.ays_optimize,
sampler.plan_search): seeded initial noise of N particles, keyed exactly as latent.noise keys it
(NoiseSource(seed) at INITIAL_STEP, particle ids 0..N-1), solves driven by the one generic loop, and
the error of a batch of final samples against a ground truth.

A search that uses these is deterministic and reproducible from its seed: the draws depend on the
seed only, and the solves are the samplers' own steps."""
from __future__ import annotations

import math

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..core.denoiser import Denoiser
from ..core.noise import INITIAL_STEP, NoiseSource
from ..core.sampler import Sampler, run_steps
from ..core.sigmas import Sigmas
from ..api import Node


class Calibrated(Node):
    """Base of nodes fitted on calibration trajectories; not a node kind itself."""

    particles: int = Field(256, ge=1, description="calibration particles (ids 0..particles-1)")
    shape: list[int] = Field([2], min_length=1, description="one sample's shape, as latent.noise 'shape'")
    seed: int = Field(0, ge=0, description="seed of the calibration noise (a workflow with this seed and "
                                          "latent.noise draws the same initial latent)")

    def noise(self, sigma_max: float, device: torch.device | str = "cpu") -> torch.Tensor:
        """(N, *shape) float32 initial latent sigma_max * eps, as latent.noise draws it with workflow seed `seed`."""
        return initial_noise(self.seed, self.particles, tuple(self.shape), sigma_max, device)


def initial_noise(seed: int, particles: int, shape: tuple[int, ...], sigma_max: float,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, *shape) float32: NoiseSource(seed) normals of particles 0..N-1 at INITIAL_STEP, times sigma_max."""
    particle = torch.arange(particles, device=device)  # (N,)
    eps = NoiseSource(seed).normal(particle, INITIAL_STEP, shape, dtype=torch.float32, device=device)  # (N, ...)
    return eps * sigma_max  # (N, ...)


def solve(sampler: Sampler, denoise: Denoiser, x: torch.Tensor, sigmas: Sigmas, seed: int) -> torch.Tensor:
    """The final x (N, ...) of `sampler` from x at sigmas[0], by run_steps with NoiseSource(seed)."""
    return run_steps(sampler, denoise, sampler.init(x, sigmas), NoiseSource(seed)).x


def euler_trajectory(denoise: Denoiser, x: torch.Tensor,
                     sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Euler on the probability-flow ODE over sigmas (L,): the points (L, N, ...) and slopes (L - 1, N, ...)."""
    points, slopes = [x], []
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        sigma = x.new_full((x.shape[0],), s)  # (N,)
        d = (x - denoise(x, sigma)) / s  # (N, ...) dx/dsigma, Karras et al. (2022) eq. 4
        x = x + (s_next - s) * d
        points.append(x)
        slopes.append(d)
    return torch.stack(points), torch.stack(slopes)


def sample_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean over particles of the L2 distance ||x_n - ref_n|| (x, reference: (N, ...)), in float64."""
    if x.shape != reference.shape:
        raise NodeError(f"calibration: samples of shape {tuple(x.shape)} cannot be compared with a ground "
                        f"truth of shape {tuple(reference.shape)}")
    diff = (x.double() - reference.double()).flatten(1)  # (N, F)
    value = float(diff.norm(dim=1).mean())
    return value if math.isfinite(value) else math.inf
