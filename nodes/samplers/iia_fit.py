"""sampler.iia_fit: fit IIA's per-step coefficients (Zhang, Niwa and Kleijn 2023) by least squares on a few
calibration trajectories, and return the improved sampler (nodes/samplers/iia.py).

Per step i, on the calibration batch at its current states x_i (already following the improved steps before
i): the base step gives x_base and the features f_k; the target x_fine is the same base solver run over
`fine_steps` sub-steps of [sigma_i, sigma_{i+1}] (Karras spacing, rho = 7, inside the interval), the paper's
fine-grained integration approximation; gamma_i minimises ||x_fine - x_base - sum_k gamma_k f_k||^2 over
all particles and elements (a K-column least-squares problem, K <= 2). The rows are plain floats: the fitted
sampler's `coefficients` field is the sampler.iia parameter that reproduces it in a workflow."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler, run_steps
from ..core.sigmas import Sigmas
from ..core.state import bcast
from .iia import FEATURES, Improved


def sub_grid(a: float, b: float, steps: int, rho: float = 7.0) -> Sigmas:
    """`steps` intervals from a down to b >= 0, Karras-spaced (uniform in sigma^(1 / rho))."""
    u = torch.linspace(0, 1, steps + 1, dtype=torch.float64)  # (M+1,)
    return Sigmas((a ** (1 / rho) + u * (b ** (1 / rho) - a ** (1 / rho))) ** rho)


def fit_coefficients(base: Sampler, denoise: Denoiser, sigmas: Sigmas, x: torch.Tensor, fine_steps: int,
                     features: int = FEATURES, noise: NoiseSource | None = None) -> list[list[float]]:
    """gamma rows (S lists of `features` floats) fitted on the calibration batch x (N, ...) at sigmas[0]."""
    if base.draws_noise:
        raise NodeError(f"sampler.iia_fit fits an ODE solver's coefficients; input 'sampler' "
                        f"({type(base).__name__}) draws noise: configure it without noise")
    noise = noise or NoiseSource(0)
    levels = sigmas.values.tolist()
    wrapped = Improved(inner=base, coefficients=[])
    state = wrapped.init(x, sigmas)
    rows: list[list[float]] = []
    for i in range(sigmas.steps):
        out, feats = wrapped.base_step(denoise, state, noise)
        gamma = [0.0] * features
        used = min(i, features)
        if used:
            fine = run_steps(base, denoise, base.init(state.x, sub_grid(levels[i], levels[i + 1], fine_steps),
                                                      state.particle), noise).x  # (N, ...)
            lhs = torch.stack([f.reshape(-1).double() for f in feats[:used]], 1)  # (N * D, K)
            rhs = (fine - out.x).reshape(-1, 1).double()  # (N * D, 1)
            gamma[:used] = torch.linalg.lstsq(lhs, rhs).solution[:, 0].tolist()
        x_next = out.x + sum(bcast(torch.full_like(state.sigma, g), out.x) * f for g, f in zip(gamma, feats))
        rows.append(gamma)
        state = out.replace(x=x_next)
    return rows


@node("sampler.iia_fit", version=1)
class IiaFit(Node):
    """Fits IIA coefficients (Zhang et al. 2023) for a base sampler on calibration trajectories from noise."""

    shape: list[int] = Field(min_length=1, description="one sample's shape, e.g. [8, 8] (the latent's)")
    particles: int = Field(64, ge=1, description="calibration trajectories")
    fine_steps: int = Field(16, ge=2, description="sub-steps of the fine-grained integration per step")
    features: int = Field(FEATURES, ge=1, le=FEATURES, description="correction terms: 1 (D_i - D_{i-1}) or 2")
    seed: int = Field(0, description="seed of the calibration noise (keep it apart from the sampling seed)")

    def run(self, sampler: Sampler, denoise: Denoiser, sigmas: Sigmas) -> Sampler:
        """The improved sampler; its `coefficients` are JSON (sampler.iia's parameter)."""
        x = sigmas.sigma_max * NoiseSource(self.seed).normal(torch.arange(self.particles), -1,
                                                             tuple(self.shape))  # (N, ...)
        rows = fit_coefficients(sampler, denoise, sigmas, x, self.fine_steps, self.features)
        return Improved(inner=sampler, coefficients=rows)
