"""guidance.coarse: guide towards a coarse observation y = A x0 (an average-pooled low-resolution
image, or any linear map) by the h-transform drift of a noise-level-aware Gaussian likelihood.

Derivation. The conditional denoiser is E[x0 | x, y] = D(x) + sigma^2 grad_x log p(y | x) (Tweedie
applied to p(x | y)), so guidance needs h(x) = p(y | x_sigma) = E[p(y | x0) | x_sigma]. Approximate
p(x0 | x_sigma) by N(D(x), r^2 I) with r^2 = sigma^2 s_d^2 / (sigma^2 + s_d^2), the posterior variance
of a Gaussian prior of std s_d (Song et al. 2023, PiGDM); with y = A x0 + N(0, sigma_y^2 I) this gives

    h(x) = N(y; A D(x), C(sigma)),   C(sigma) = sigma_y^2 I + r(sigma)^2 A A^T,

a weight that is loose at high noise (r -> s_d: the coarse target barely constrains a blurry
estimate) and tight at low noise (r -> 0: only sigma_y remains). The node returns
D(x) + scale sigma^2 grad_x log h(x), the gradient taken through the denoiser with C(sigma) fixed.
For a Gaussian prior N(mu, s_d^2 I) and scale 1 every step is exact: J_D = s_d^2 / (s_d^2 + sigma^2) I
and p(x0 | x) is exactly N(D(x), r^2 I), so the output is the exact E[x0 | x, y]."""
from __future__ import annotations

import torch
from pydantic import Field, model_validator

from ...graph.errors import NodeError
from ..api import node
from ..core.denoiser import Denoiser
from .common import GuidanceInterval, X0GradientGuided


@node("guidance.coarse")
class CoarseGuidance(GuidanceInterval):
    """h-transform guidance to a coarse target with a sigma-aware likelihood (Song et al. 2023, PiGDM, eq. 7-8)."""

    target: list[float] = Field(min_length=1, description="y = A x0 of one sample, flattened (e.g. 16 numbers "
                                                          "for an 8x8 image pooled by 2)")
    factor: int | None = Field(None, ge=1, description="A = average pooling by factor over the last two dims")
    matrix: list[list[float]] | None = Field(None, min_length=1, description="A as rows (m, D) on flattened x0")
    sigma_y: float = Field(0.05, gt=0.0, description="std of the observation noise on y")
    data_std: float | None = Field(0.5, gt=0.0, description="s_d of r^2 = sigma^2 s_d^2 / (sigma^2 + s_d^2); "
                                                           "None: r = sigma")
    scale: float = Field(1.0, description="drift multiplier: 1 = the h-transform, 0 = unguided")

    @model_validator(mode="after")
    def _one_operator(self) -> CoarseGuidance:
        """Exactly one of factor and matrix defines A, and its rows must match the target."""
        if (self.factor is None) == (self.matrix is None):
            raise ValueError("set exactly one of 'factor' (average pooling) and 'matrix' (rows of A)")
        if self.matrix is not None and len(self.matrix) != len(self.target):
            raise ValueError(f"'matrix' has {len(self.matrix)} rows but 'target' has {len(self.target)} numbers")
        return self

    def observe(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A x0 (B, m) and the Gram matrix A A^T (m, m) for x0 (B, ...)."""
        if self.matrix is not None:
            a = torch.tensor(self.matrix, dtype=x0.dtype, device=x0.device)  # (m, D)
            if a.shape[1] != x0[0].numel():
                raise NodeError(f"guidance.coarse 'matrix' rows have {a.shape[1]} numbers but samples have "
                                f"{x0[0].numel()}; give one per coordinate")
            return x0.flatten(1) @ a.T, a @ a.T
        k = self.factor
        if x0.ndim < 3 or x0.shape[-1] % k or x0.shape[-2] % k:
            raise NodeError(f"guidance.coarse 'factor' {k} needs samples (..., H, W) with H, W divisible by it; "
                            f"got shape {tuple(x0.shape[1:])}; use 'matrix' for flat samples")
        pooled = torch.nn.functional.avg_pool2d(x0.reshape(-1, 1, *x0.shape[-2:]), k)  # (B * C, 1, H/k, W/k)
        m = pooled[0].numel() * (x0[0].numel() // x0.shape[-1] // x0.shape[-2])
        return pooled.reshape(x0.shape[0], -1), torch.eye(m, dtype=x0.dtype, device=x0.device) / k ** 2

    def log_h(self, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log N(y; A x0, C(sigma)) (B,) up to a constant in x0."""
        ax, gram = self.observe(x0)  # (B, m), (m, m)
        y = torch.tensor(self.target, dtype=x0.dtype, device=x0.device)  # (m,)
        if ax.shape[1] != y.numel():
            raise NodeError(f"guidance.coarse 'target' has {y.numel()} numbers but A x0 has {ax.shape[1]}")
        s2 = sigma.to(x0.dtype) ** 2  # (B,)
        r2 = s2 if self.data_std is None else s2 * self.data_std ** 2 / (s2 + self.data_std ** 2)  # (B,)
        cov = self.sigma_y ** 2 * torch.eye(y.numel(), dtype=x0.dtype, device=x0.device) + r2[:, None, None] * gram
        resid = y - ax  # (B, m)
        return -0.5 * (resid * torch.linalg.solve(cov, resid)).sum(1)  # (B,)

    def run(self, denoise: Denoiser) -> Denoiser:
        """The guided Denoiser (1 model evaluation plus 1 backward pass per call inside the interval)."""
        return X0GradientGuided(self, denoise, self.log_h, self.scale)
