"""guidance.cads: condition-annealed sampling. The conditional model sees a noised class embedding

    y_hat = sqrt(gamma(t)) y + s sqrt(1 - gamma(t)) n,   n ~ N(0, I),

gamma(t) = 1 for t <= tau1, 0 for t >= tau2, linear in between (t = 1 is pure noise), optionally
rescaled to y's mean and std and mixed back by psi: y_final = psi rescale(y_hat) + (1 - psi) y_hat
(not where y_hat is constant, s = 0 at gamma = 0, as the reference code skips a NaN rescale).
Early (noisy) steps thus see a blurred condition, which restores diversity at high CFG scales;
wire the output as guidance.cfg's `cond` (the unconditional model is left alone, as in the paper).

Noise level as time: t(sigma) = log(sigma / sigma_min) / log(sigma_max / sigma_min) on the model's own
sigma range, clamped to [0, 1]. Where gamma = 1 the embedding is exactly y, so those rows (and the
whole sampler below tau1) give the plain conditional estimate bit for bit.

Reproducibility: a Denoiser sees neither particle ids nor steps, so n is keyed by the workflow seed
and a hash of each row's exact (x, sigma) values: the same row always gets the same n, however the
batch is cut or reordered (batch-split invariant), and re-runs repeat. Statistics for the rescale are
per row (over the embedding), not over the batch, for the same reason."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field, ValidationInfo, field_validator

from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.noise import GOLDEN, mix64, normal_from_keys, particle_key
from ..models.labelled import Labelled


@node("guidance.cads")
class CADS(Node):
    """Condition-annealed diffusion sampling (Sadat et al. 2024, eqs. 3-5): scheduled noise on the condition."""

    uses_seed: ClassVar[bool] = True
    tau1: float = Field(0.6, ge=0.0, le=1.0, description="gamma = 1 (clean condition) for t <= tau1")
    tau2: float = Field(0.9, ge=0.0, le=1.0, description="gamma = 0 (pure noise condition) for t >= tau2")
    noise_scale: float = Field(0.25, ge=0.0, description="s: std of the noise on the condition")
    psi: float = Field(1.0, ge=0.0, le=1.0, description="mix of the rescaled (1) and raw (0) noised condition")

    @field_validator("tau2")
    @classmethod
    def _after_tau1(cls, value: float, info: ValidationInfo) -> float:
        """The schedule ramps from tau1 up to tau2."""
        low = info.data.get("tau1")
        if low is not None and not value > low:
            raise ValueError(f"must be greater than tau1 ({low})")
        return value

    def run(self, cond: Labelled, ctx: NodeContext) -> Denoiser:
        """The conditional model with an annealed condition (1 evaluation per call); NodeError for models
        without a condition embedding (analytic mixtures)."""
        return Annealed(self, cond, cond.condition_embedding(), ctx.noise.seed)

    def gamma(self, sigma: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
        """gamma(t(sigma)) (B,) float64 in [0, 1]."""
        t = (sigma.double() / sigma_min).log() / math.log(sigma_max / sigma_min)  # (B,)
        return ((self.tau2 - t.clamp(0.0, 1.0)) / (self.tau2 - self.tau1)).clamp(0.0, 1.0)

    def anneal(self, y: torch.Tensor, gamma: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """y_final (B, E) from the embedding y (E,), gamma (B,) and normals n (B, E); exactly y where gamma = 1."""
        g = gamma[:, None]  # (B, 1)
        y_hat = g.sqrt() * y + self.noise_scale * (1 - g).sqrt() * n  # (B, E)
        if self.psi > 0:
            std = y_hat.std(1, keepdim=True)  # (B, 1); 0 where s = 0 and gamma = 0: nothing to rescale
            scaled = (y_hat - y_hat.mean(1, keepdim=True)) / std.clamp_min(1e-30) * y.std() + y.mean()
            y_hat = torch.where(std > 0, self.psi * scaled + (1 - self.psi) * y_hat, y_hat)
        return torch.where(g == 1, y.expand_as(y_hat), y_hat)


def row_normals(seed: int, x: torch.Tensor, sigma: torch.Tensor, numel: int) -> torch.Tensor:
    """Normals (B, numel) float64 keyed by seed and a hash of each row's exact values x (B, ...), sigma (B,)."""
    bits = x.detach().flatten(1).to(torch.float64).view(torch.int64)  # (B, D)
    pos = torch.arange(1, bits.shape[1] + 1, dtype=torch.int64, device=x.device) * GOLDEN  # (D,)
    row = mix64(bits + pos).sum(1)  # (B,) int64 sum wraps around, as a hash should
    row = mix64(row ^ sigma.detach().to(torch.float64).view(torch.int64))  # (B,)
    return normal_from_keys(particle_key(seed, row), numel)


class Annealed(Denoiser):
    """A labelled model evaluated with a CADS-annealed condition embedding per row."""

    def __init__(self, rule: CADS, model: Labelled, embedding: torch.Tensor, seed: int):
        self.rule, self.model, self.embedding, self.seed = rule, model, embedding, seed

    def to(self, device: torch.device) -> Annealed:
        return Annealed(self.rule, self.model.to(device), self.embedding.to(device), self.seed)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sampling = self.model.sampling
        gamma = self.rule.gamma(sigma, sampling.sigma_min, sampling.sigma_max)  # (B,)
        if bool((gamma == 1).all()):
            return self.model(x, sigma)
        y = self.embedding.to(torch.float64)  # (E,)
        emb = self.rule.anneal(y, gamma, row_normals(self.seed, x, sigma, y.numel()))  # (B, E)
        return self.model.denoise_embedded(x, sigma, emb.to(self.embedding.dtype))
