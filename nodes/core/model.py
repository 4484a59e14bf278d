"""Model: a Denoiser that also states its noise parametrisation (ModelSampling), so
schedules can be built from a model's own sigma range or discrete timestep table
(ComfyUI's model_sampling; diffusers' scheduler config)."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from .denoiser import Denoiser


class ModelSampling(ABC):
    """A network's time <-> sigma map in the space x = x0 + sigma * eps, its sigma range, and
    the space its inputs live in (`input_scale`: VE x -> network input)."""

    sigma_data: float = 1.0  # the data std the network's preconditioning assumes (EDM); 1 otherwise

    @property
    @abstractmethod
    def sigma_min(self) -> float: ...

    @property
    @abstractmethod
    def sigma_max(self) -> float: ...

    @abstractmethod
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """The sigma of network time t (same shape)."""

    @abstractmethod
    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The (continuous) network time of sigma (same shape); inverse of `sigma`."""

    def input_scale(self, sigma: torch.Tensor) -> torch.Tensor:
        """(B,) factor taking VE x to the network's input space; 1 for VE models."""
        return torch.ones_like(sigma)

    @property
    def discrete_sigmas(self) -> torch.Tensor | None:
        """(N,) ascending sigma of each training timestep for discrete-time models, else None."""
        return None


class Model(Denoiser):
    """A Denoiser with its noise parametrisation; what model nodes output."""

    @property
    @abstractmethod
    def sampling(self) -> ModelSampling: ...


class VESampling(ModelSampling):
    """Continuous variance-exploding time: t = sigma (Song et al. 2021; Karras et al. 2022)."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        self._min, self._max = float(sigma_min), float(sigma_max)

    @property
    def sigma_min(self) -> float:
        return self._min

    @property
    def sigma_max(self) -> float:
        return self._max

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma
