"""guidance.epsilon_scaling: Epsilon Scaling (Ning et al. 2024, "Elucidating the Exposure Bias in
Diffusion Models", ICLR 2024), the training-free exposure-bias correction eps' = eps / lambda(t).

In this package's space x = x0 + sigma eps the network's noise estimate is eps = (x - D(x, sigma)) / sigma
(the same eps in VP terms), so the scaled estimate is D'(x, sigma) = x - (x - D) / lambda. The schedule
is the paper's lambda(t) = k t + b (k = 0: the uniform lambda = b they mostly use), t the model's own
network time `sampling.timestep(sigma)` (a DDPM model's timestep 0..N-1, as the paper's t; VE/EDM
models: their time). Rows with lambda = 1 return D itself, bit for bit.

Why a Denoiser -> Denoiser node and not a sampler wrapper (like sampler.time_shift): the correction
reads only each call's (x, sigma) and the model's time, never the solver's state, so as a model
transform it applies to every call of every sampler (multistage ones included) and composes with
guidance; a wrapper would add nothing but a second place to configure it. Wire it on the model
(before guidance.cfg: CFG is affine in eps, so scaling both branches by one lambda is the same as
scaling the guided eps)."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.model import Model, ModelSampling
from ..core.state import bcast


@node("guidance.epsilon_scaling")
class EpsilonScaling(Node):
    """Implements Epsilon Scaling, eps / (k t + b), of Ning et al. (2024), Sec. 5."""

    k: float = Field(0.0, description="slope of lambda(t) = k t + b in the model's network time t")
    b: float = Field(1.0, gt=0, description="lambda at t = 0 (k = 0: the uniform scale; > 1 shrinks eps)")

    def run(self, model: Model) -> Model:
        """`model` whose noise estimate is divided by lambda(t) on every call."""
        return EpsilonScaled(model, self.k, self.b)


class EpsilonScaled(Model):
    """D'(x, sigma) = x - (x - D(x, sigma)) / lambda(t(sigma)); one model evaluation per call."""

    def __init__(self, inner: Model, k: float, b: float):
        self.inner, self.k, self.b = inner, k, b

    @property
    def sampling(self) -> ModelSampling:
        return self.inner.sampling

    def to(self, device: torch.device) -> EpsilonScaled:
        return EpsilonScaled(self.inner.to(device), self.k, self.b)

    def evaluations(self, sigma: torch.Tensor) -> int:
        return self.inner.evaluations(sigma)

    def scale(self, sigma: torch.Tensor) -> torch.Tensor:
        """lambda (B,) at the levels sigma (B,); must stay positive."""
        lam = self.k * self.inner.sampling.timestep(sigma).to(sigma.dtype) + self.b  # (B,)
        if bool((lam <= 0).any()):
            raise NodeError(f"epsilon scaling lambda = k t + b = {float(lam.min()):g} <= 0 at some sigma; "
                             f"choose k, b with k t + b > 0 over the model's time range")
        return lam

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x0 = self.inner(x, sigma)  # (B, ...)
        if self.k == 0 and self.b == 1:
            return x0
        lam = self.scale(sigma)  # (B,)
        return torch.where(bcast(lam == 1, x0), x0, x - (x - x0) / bcast(lam, x0))  # (B, ...)
