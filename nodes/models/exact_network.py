"""ExactNetwork: what a perfectly trained network of a given parametrisation outputs for an
analytic model, so that the wrapper layer (NetworkDenoiser) is exercised against an exact answer.

It inverts every step of NetworkDenoiser: network time -> sigma, network input -> VE x,
the exact x0 at (x, sigma), then x0 -> eps / v / x0 / flow velocity / EDM F in the
network's own terms. A network only knows its time, so with rounded timesteps it answers
for the rounded sigma, just as a trained network would."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..core.model import ModelSampling
from ..core.state import bcast
from .parametrisation import Prediction, from_x0, input_scale, sigma_data_of

ExactX0 = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B, ...), sigma (B,)) -> x0 (B, ...)


class ExactNetwork:
    """A fake network net(x_in, t_in) -> output built from an exact denoiser (Karras et al. 2022, eq. 3)."""

    def __init__(self, exact_x0: ExactX0, sampling: ModelSampling, prediction: Prediction):
        self.exact_x0, self.sampling, self.prediction = exact_x0, sampling, prediction

    def __repr__(self) -> str:
        return f"ExactNetwork({self.prediction}, {self.sampling!r})"

    def __call__(self, x_in: torch.Tensor, t_in: torch.Tensor) -> torch.Tensor:
        """The output (B, ...) for network input x_in (B, ...) at network time t_in (B,)."""
        sigma = self.sampling.sigma(t_in).to(x_in.dtype)  # (B,)
        x = x_in / bcast(input_scale(self.sampling, sigma), x_in)  # (B, ...) back in VE space
        x0 = self.exact_x0(x, sigma)  # (B, ...)
        return from_x0(self.prediction, x0, x, sigma, sigma_data_of(self.sampling))
