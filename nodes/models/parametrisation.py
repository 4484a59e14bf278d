"""The one wrapper layer from a network to the Denoiser contract (x, sigma) -> x0.

A network `net(x_in, t_in, **cond) -> out` is trained in its own input space and time:
    input  x_in = c_in(sigma) * x                   (VE: 1; VP: 1/sqrt(1+sigma^2);
                                                      EDM: 1/sqrt(sigma^2+sigma_data^2); flow: 1/(1+sigma))
    time   t_in = sampling.timestep(sigma)          (or the nearest discrete step: `timestep="rounded"`)
    output eps | v | x0 | flow velocity | EDM F     (converted back to x0 in VE space)
with x = x0 + sigma * eps (Karras et al. 2022). Each conversion is one small function below,
and each output conversion has its exact inverse (`from_x0`), which the analytic GMM uses to
play a perfectly trained network of any parametrisation (nodes/models/exact_network.py).

`Parametrisation` is the parameter set that model nodes share to pick a parametrisation by
name (e.g. "eps_discrete_vp"); an option the chosen one ignores is an error."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ..core.validators import greater_than
from ..core.model import Model, ModelSampling, VESampling
from ..core.state import bcast
from .sampling import (BetaSchedule, ContinuousVPSampling, DiscreteVPSampling, EDMSampling, RectifiedFlowSampling,
                       nearest_timestep)

Prediction = Literal["eps", "v", "x0", "flow", "edm"]
TimestepMode = Literal["continuous", "rounded"]
PREDICTIONS: tuple[str, ...] = get_args(Prediction)
Network = Callable[..., torch.Tensor]  # net(x_in (B, ...), t_in (B,), **cond) -> (B, ...)


def sigma_data_of(sampling: ModelSampling) -> float:
    """The data std the preconditioning assumes: EDM's sigma_data, else 1 (VP, VE and flow models)."""
    return float(sampling.sigma_data)


def input_scale(sampling: ModelSampling, sigma: torch.Tensor) -> torch.Tensor:
    """(B,) factor taking VE x to the network's input space (each ModelSampling states its own)."""
    return sampling.input_scale(sigma)


def network_time(sampling: ModelSampling, sigma: torch.Tensor, mode: TimestepMode = "continuous") -> torch.Tensor:
    """(B,) time the network sees: continuous, or that of the nearest discrete step (diffusers' Karras mode)."""
    return nearest_timestep(sampling, sigma) if mode == "rounded" else sampling.timestep(sigma)


def edm_scalings(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out), each (B,), of Karras et al. (2022), Table 1: x0 = c_skip x + c_out F."""
    total = sigma ** 2 + sigma_data ** 2
    return sigma_data ** 2 / total, sigma * sigma_data * total.rsqrt()


def to_x0(prediction: Prediction, out: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor,
          sigma_data: float = 1.0) -> torch.Tensor:
    """The x0 estimate (B, ...) from a network output `out` (B, ...) at VE x (B, ...) and sigma (B,).

    eps: x0 = x - sigma eps. v (Salimans & Ho 2022; k-diffusion VDenoiser): x0 = c_skip x - c_out v.
    flow velocity v = eps - x0: x0 = (x - sigma v) / (1 + sigma). edm: x0 = c_skip x + c_out F."""
    s = bcast(sigma, x)  # (B, 1, ...)
    if prediction == "x0":
        return out
    if prediction == "eps":
        return x - s * out
    if prediction == "flow":
        return (x - s * out) / (1 + s)
    c_skip, c_out = (bcast(c, x) for c in edm_scalings(sigma, sigma_data))
    sign = -1.0 if prediction == "v" else 1.0
    return c_skip * x + sign * c_out * out


def from_x0(prediction: Prediction, x0: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor,
            sigma_data: float = 1.0) -> torch.Tensor:
    """The network output (B, ...) that `to_x0` turns into x0 (its exact inverse; needs sigma > 0 except for x0)."""
    s = bcast(sigma, x)  # (B, 1, ...)
    if prediction == "x0":
        return x0
    if prediction == "eps":
        return (x - x0) / s
    if prediction == "flow":
        return (x - (1 + s) * x0) / s
    c_skip, c_out = (bcast(c, x) for c in edm_scalings(sigma, sigma_data))
    sign = -1.0 if prediction == "v" else 1.0
    return sign * (x0 - c_skip * x) / c_out


class NetworkDenoiser(Model):
    """A network of any prediction type, input space and time, seen as the Denoiser of Karras et al. (2022), eq. 7."""

    def __init__(self, net: Network, sampling: ModelSampling, prediction: Prediction = "eps",
                 timestep: TimestepMode = "continuous", cond: dict[str, Any] | None = None):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}; got {prediction!r}")
        if timestep not in ("continuous", "rounded"):
            raise ValueError(f"timestep must be 'continuous' or 'rounded'; got {timestep!r}")
        if timestep == "rounded" and sampling.discrete_sigmas is None:
            raise ValueError(f"timestep 'rounded' needs a discrete-time model; {sampling!r} is continuous: "
                             f"use timestep 'continuous'")
        self.net, self._sampling, self.prediction, self.timestep_mode = net, sampling, prediction, timestep
        self.cond = dict(cond or {})
        self.sigma_data = sigma_data_of(sampling)

    def __repr__(self) -> str:
        return f"NetworkDenoiser({self.prediction}, {self._sampling!r}, timestep={self.timestep_mode})"

    @property
    def sampling(self) -> ModelSampling:
        return self._sampling

    def bind(self, **cond: Any) -> NetworkDenoiser:
        """The same network with conditioning keyword arguments bound (docs/ARCHITECTURE.md: conditioning is bound)."""
        return NetworkDenoiser(self.net, self._sampling, self.prediction, self.timestep_mode, {**self.cond, **cond})

    def to(self, device: torch.device) -> NetworkDenoiser:
        move = getattr(self.net, "to", None)
        if move is None:
            return self
        return NetworkDenoiser(move(device), self._sampling, self.prediction, self.timestep_mode, self.cond)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x0 (B, ...) of x (B, ...) at sigma (B,); exactly x where sigma == 0."""
        x_in = x * bcast(input_scale(self._sampling, sigma), x)  # (B, ...)
        t_in = network_time(self._sampling, sigma, self.timestep_mode)  # (B,)
        x0 = to_x0(self.prediction, self.net(x_in, t_in, **self.cond), x, sigma, self.sigma_data)  # (B, ...)
        return torch.where(bcast(sigma == 0, x), x, x0)


Family = Literal["ve", "discrete_vp", "continuous_vp", "edm", "flow"]
KINDS: dict[str, tuple[Prediction, Family]] = {
    "x0_ve": ("x0", "ve"), "eps_ve": ("eps", "ve"),
    "eps_discrete_vp": ("eps", "discrete_vp"), "v_discrete_vp": ("v", "discrete_vp"),
    "x0_discrete_vp": ("x0", "discrete_vp"),
    "eps_continuous_vp": ("eps", "continuous_vp"), "v_continuous_vp": ("v", "continuous_vp"),
    "edm": ("edm", "edm"), "flow": ("flow", "flow"),
}
Kind = Literal[tuple(KINDS)]  # type: ignore[valid-type]  # the names above
APPLIES_TO: dict[str, tuple[Family, ...]] = {
    "timestep": ("discrete_vp",), "beta_schedule": ("discrete_vp",), "beta_start": ("discrete_vp",),
    "beta_end": ("discrete_vp",), "num_train_timesteps": ("discrete_vp",), "zero_terminal_snr": ("discrete_vp",),
    "beta_min": ("continuous_vp",), "beta_d": ("continuous_vp",), "eps_t": ("continuous_vp",),
    "sigma_min": ("ve", "edm"), "sigma_max": ("ve", "edm"), "sigma_data": ("edm",),
    "shift": ("flow",), "multiplier": ("flow",),
}


class Parametrisation(BaseModel):
    """Which network parametrisation a model node plays: prediction type, noise process and time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    parametrisation: Kind = Field("x0_ve", description="prediction_family: x0/eps/v prediction on VE, discrete "
                                  "or continuous VP time; 'edm' (Karras F); 'flow' (rectified-flow velocity)")
    timestep: TimestepMode = Field("continuous", description="discrete VP: the network sees continuous "
                                   "timesteps or the nearest integer step (diffusers' Karras mode)")
    beta_schedule: BetaSchedule = "scaled_linear"
    beta_start: float = Field(0.00085, gt=0, lt=1, description="Stable Diffusion's; DDPM 'linear' uses 0.0001")
    beta_end: float = Field(0.012, gt=0, lt=1, description="Stable Diffusion's; DDPM 'linear' uses 0.02")
    num_train_timesteps: int = Field(1000, ge=2)
    zero_terminal_snr: bool = Field(False, description="rescale to SNR 0 at the last step (Lin et al. 2024)")
    beta_min: float = Field(0.1, gt=0, description="VP SDE (Song et al. 2021)")
    beta_d: float = Field(19.9, gt=0, description="VP SDE (Song et al. 2021)")
    eps_t: float = Field(1e-3, gt=0, lt=1, description="VP SDE's smallest time (EDM's eps_s)")
    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(80.0, gt=0)
    sigma_data: float = Field(0.5, gt=0, description="EDM preconditioning's data std")
    shift: float = Field(1.0, gt=0, description="flow time shift schedules apply (SD3: 3)")
    multiplier: float = Field(1.0, gt=0, description="flow network time = multiplier * t (SD3: 1000)")

    @field_validator(*APPLIES_TO)
    @classmethod
    def _option_applies(cls, value: object, info: ValidationInfo) -> object:
        """An option the chosen parametrisation ignores is an error, not silently dropped."""
        kind = info.data.get("parametrisation")
        if kind is not None and KINDS[kind][1] not in APPLIES_TO[info.field_name]:
            users = " or ".join(APPLIES_TO[info.field_name])
            raise ValueError(f"'{info.field_name}' is not used by parametrisation '{kind}' (only by {users} "
                             f"models); remove it")
        return value

    _above_min = greater_than("sigma_max", "sigma_min")

    @property
    def prediction(self) -> Prediction:
        return KINDS[self.parametrisation][0]

    @property
    def is_exact(self) -> bool:
        """True for the default: the exact x0 in VE space, no network in between."""
        return self.parametrisation == "x0_ve"

    def options(self) -> dict[str, Any]:
        """Only the parameters of the parametrisation (what was set), e.g. to rebuild it from a cache."""
        return self.model_dump(include=set(Parametrisation.model_fields), exclude_unset=True)

    def model_sampling(self) -> ModelSampling:
        """The ModelSampling of the chosen noise process."""
        family = KINDS[self.parametrisation][1]
        if family == "discrete_vp":
            return DiscreteVPSampling.from_betas(self.beta_schedule, self.num_train_timesteps, self.beta_start,
                                                 self.beta_end, self.zero_terminal_snr)
        if family == "continuous_vp":
            return ContinuousVPSampling(self.beta_min, self.beta_d, self.eps_t)
        if family == "edm":
            return EDMSampling(self.sigma_data, self.sigma_min, self.sigma_max)
        if family == "flow":
            return RectifiedFlowSampling(self.shift, self.multiplier)
        return VESampling(self.sigma_min, self.sigma_max)

    def wrap(self, net: Network, sampling: ModelSampling | None = None) -> NetworkDenoiser:
        """`net` seen as a Denoiser under this parametrisation."""
        return NetworkDenoiser(net, sampling or self.model_sampling(), self.prediction, self.timestep)
