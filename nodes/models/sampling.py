"""ModelSampling implementations: each network family's time <-> sigma map in the space
x = x0 + sigma * eps (Karras et al. 2022), its sigma range, and (discrete models) its table.

- DiscreteVPSampling: DDPM-style models trained on N integer timesteps with alphas_cumprod
  from a beta schedule (Ho et al. 2020; Nichol & Dhariwal 2021; Rombach et al. 2022), with
  the zero-terminal-SNR rescale of Lin et al. (2024). sigma_t = sqrt((1 - a_t) / a_t); the
  continuous time between integer steps interpolates log-sigma (k-diffusion DiscreteSchedule).
- ContinuousVPSampling: the VP SDE of Song et al. (2021), t in [eps_t, 1].
- EDMSampling: Karras et al. (2022) preconditioned models, network time c_noise = ln(sigma) / 4.
- RectifiedFlowSampling: flow time t in [0, 1], x_t = (1 - t) x0 + t eps, sigma = t / (1 - t)
  (Liu et al. 2023; Esser et al. 2024). `time_shift` is the SD3 / Flux resolution shift.

Tables are float64 whatever dtype the caller uses: a float32 table shifts sigma by ~1e-7
relatively (diffusers computes in float32; see tests/test_parametrisation.py)."""
from __future__ import annotations

import math
from typing import Literal

import torch

from ..core.model import ModelSampling, VESampling

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2"]
# diffusers sets the rescaled terminal alphas_cumprod to 2**-24 (fp16's smallest subnormal),
# so the last sigma is ~4096 instead of infinite; ComfyUI uses 4.8973451890853435e-08 (~4519).
DIFFUSERS_TERMINAL_ALPHA_CUMPROD = 2.0 ** -24
COMFY_TERMINAL_ALPHA_CUMPROD = 4.8973451890853435e-08

__all__ = ["BetaSchedule", "ContinuousVPSampling", "DiscreteVPSampling", "EDMSampling", "RectifiedFlowSampling",
           "VESampling", "betas_for", "nearest_timestep", "rescale_zero_terminal_snr", "sigma_to_flow_time",
           "flow_time_to_sigma", "time_shift"]


def betas_for(beta_schedule: BetaSchedule, num_train_timesteps: int = 1000, beta_start: float = 0.00085,
              beta_end: float = 0.012) -> torch.Tensor:
    """The (N,) float64 betas of a named schedule, as diffusers' schedulers define them.

    linear: Ho et al. (2020); scaled_linear: linear in sqrt(beta) (Stable Diffusion);
    squaredcos_cap_v2: the cosine alpha_bar of Nichol & Dhariwal (2021), betas capped at 0.999."""
    n, schedule = num_train_timesteps, beta_schedule
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float64) ** 2
    if schedule == "squaredcos_cap_v2":
        t = torch.arange(n + 1, dtype=torch.float64) / n  # (N+1,)
        alpha_bar = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown beta schedule {schedule!r}; use 'linear', 'scaled_linear' or 'squaredcos_cap_v2'")


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor,
                              terminal: float = DIFFUSERS_TERMINAL_ALPHA_CUMPROD) -> torch.Tensor:
    """Algorithm 1 of Lin et al. (2024): shift and scale sqrt(alphas_cumprod) so the last is 0, the first kept.

    The last value is then set to `terminal` (not 0) so that its VE sigma is finite, as diffusers
    and ComfyUI do; where the one before is already below `terminal` (a 'linear' beta schedule),
    half of that one is used instead so that sigma still increases with t."""
    root = alphas_cumprod.sqrt()  # (N,)
    first, last = root[0].clone(), root[-1].clone()
    rescaled = ((root - last) * (first / (first - last))) ** 2  # (N,)
    rescaled[-1] = min(terminal, float(rescaled[-2]) / 2)
    return rescaled


def interp_sigma(sigmas: torch.Tensor, log_sigmas: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """sigma at continuous index t, log-linear between integer neighbours (k-diffusion t_to_sigma);
    exactly the table entry at integer t (no exp(log()) round-off)."""
    low = t.floor().long().clamp(0, log_sigmas.numel() - 1)
    high = t.ceil().long().clamp(0, log_sigmas.numel() - 1)
    w = t - t.floor()
    return torch.where(w == 0, sigmas[low], ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp())


def interp_index(log_sigmas: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """The continuous index of log_sigma in an ascending table, clamped to [0, N-1] (k-diffusion sigma_to_t)."""
    low = (torch.searchsorted(log_sigmas, log_sigma, right=True) - 1).clamp(0, log_sigmas.numel() - 2)
    lo, hi = log_sigmas[low], log_sigmas[low + 1]
    w = ((log_sigma - lo) / (hi - lo)).clamp(0, 1)
    return low.to(log_sigma.dtype) + w


def nearest_timestep(sampling: ModelSampling, sigma: torch.Tensor) -> torch.Tensor:
    """The network time of the discrete-table entry nearest to sigma in log space (k-diffusion quantize).

    For an integer-timestep table this is round(timestep(sigma)) (diffusers' rounding), but
    exact ties go to the lower entry."""
    table = sampling.discrete_sigmas
    if table is None:
        raise ValueError(f"{type(sampling).__name__} is continuous-time: it has no discrete timesteps to round to")
    table = table.to(device=sigma.device, dtype=torch.float64)  # (N,)
    return sampling.timestep(table[nearest_index(table.log(), sigma)]).to(sigma.dtype)


def nearest_index(log_sigmas: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Index (int64, sigma's shape) of the ascending table's entry nearest to sigma in log space; ties go low."""
    log_sigma = sigma.to(torch.float64).log()
    low = (torch.searchsorted(log_sigmas, log_sigma, right=True) - 1).clamp(0, log_sigmas.numel() - 2)
    above = (log_sigmas[low + 1] - log_sigma).abs() < (log_sigma - log_sigmas[low]).abs()
    return low + above.long()


def vp_input_scale(sigma: torch.Tensor) -> torch.Tensor:
    """x_vp = x / sqrt(1 + sigma^2) = sqrt(alpha_bar) x (Ho et al. 2020 in VE coordinates)."""
    return (1 + sigma ** 2).rsqrt()


def edm_input_scale(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """c_in = 1 / sqrt(sigma^2 + sigma_data^2) (Karras et al. 2022, Table 1)."""
    return (sigma ** 2 + sigma_data ** 2).rsqrt()


def flow_input_scale(sigma: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t eps = x / (1 + sigma) with t = sigma / (1 + sigma) (rectified flow)."""
    return 1 / (1 + sigma)


class DiscreteVPSampling(ModelSampling):
    """Discrete-time VP (DDPM, Ho et al. 2020) steps 0..N-1: sigma_t = sqrt((1 - a_t) / a_t), log-linear between."""

    def input_scale(self, sigma: torch.Tensor) -> torch.Tensor:
        return vp_input_scale(sigma)

    def __init__(self, alphas_cumprod: torch.Tensor, quantize: bool = False):
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).cpu()
        if ac.ndim != 1 or ac.numel() < 2 or not bool(((ac > 0) & (ac <= 1)).all()):
            raise ValueError(f"alphas_cumprod must be a 1-D table of >= 2 values in (0, 1], got shape "
                             f"{tuple(ac.shape)}")
        self.alphas_cumprod = ac  # (N,)
        self.sigmas = ((1 - ac) / ac).sqrt()  # (N,) ascending for a decreasing alphas_cumprod
        if not bool((self.sigmas[1:] > self.sigmas[:-1]).all()):
            raise ValueError("alphas_cumprod must be strictly decreasing (sigma increasing with t)")
        self.log_sigmas = self.sigmas.log()  # (N,)
        self.quantize = quantize
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_betas(cls, beta_schedule: BetaSchedule = "scaled_linear", num_train_timesteps: int = 1000,
                   beta_start: float = 0.00085, beta_end: float = 0.012, zero_terminal_snr: bool = False,
                   terminal: float = DIFFUSERS_TERMINAL_ALPHA_CUMPROD, quantize: bool = False) -> DiscreteVPSampling:
        """alphas_cumprod = cumprod(1 - betas), optionally rescaled to zero terminal SNR (Lin et al. 2024)."""
        ac = torch.cumprod(1 - betas_for(beta_schedule, num_train_timesteps, beta_start, beta_end), dim=0)
        if zero_terminal_snr:
            ac = rescale_zero_terminal_snr(ac, terminal)
        return cls(ac, quantize=quantize)

    def __repr__(self) -> str:
        return f"DiscreteVPSampling(N={self.sigmas.numel()}, sigma {self.sigma_min:.4g}..{self.sigma_max:.4g})"

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigmas, log_sigmas) on `device`, copied there once."""
        if device not in self._on:
            self._on[device] = (self.sigmas.to(device), self.log_sigmas.to(device))
        return self._on[device]

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    @property
    def discrete_sigmas(self) -> torch.Tensor:
        return self.sigmas

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma at continuous timestep t in [0, N-1] (log-sigma interpolation)."""
        return interp_sigma(*self._tables(t.device), t.to(torch.float64)).to(t.dtype)

    def timestep(self, sigma: torch.Tensor, quantize: bool | None = None) -> torch.Tensor:
        """Continuous timestep of sigma, clamped to [0, N-1]; the nearest integer step when quantizing."""
        if self.quantize if quantize is None else quantize:
            return nearest_index(self._tables(sigma.device)[1], sigma).to(sigma.dtype)
        return interp_index(self._tables(sigma.device)[1], sigma.to(torch.float64).log()).to(sigma.dtype)


class ContinuousVPSampling(ModelSampling):
    """The VP SDE of Song et al. (2021): sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) (EDM Table 1)."""

    def input_scale(self, sigma: torch.Tensor) -> torch.Tensor:
        return vp_input_scale(sigma)

    def __init__(self, beta_min: float = 0.1, beta_d: float = 19.9, eps_t: float = 1e-3):
        self.beta_min, self.beta_d, self.eps_t = float(beta_min), float(beta_d), float(eps_t)

    def __repr__(self) -> str:
        return f"ContinuousVPSampling(beta_min={self.beta_min}, beta_d={self.beta_d}, eps_t={self.eps_t})"

    @property
    def sigma_min(self) -> float:
        return float(self.sigma(torch.tensor(self.eps_t, dtype=torch.float64)))

    @property
    def sigma_max(self) -> float:
        return float(self.sigma(torch.tensor(1.0, dtype=torch.float64)))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.expm1(0.5 * self.beta_d * t ** 2 + self.beta_min * t).sqrt()

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return ((self.beta_min ** 2 + 2 * self.beta_d * torch.log1p(sigma ** 2)).sqrt() - self.beta_min) / self.beta_d


class EDMSampling(ModelSampling):
    """Karras et al. (2022) EDM: network time c_noise = ln(sigma) / 4 (Table 1), data std sigma_data."""

    def input_scale(self, sigma: torch.Tensor) -> torch.Tensor:
        return edm_input_scale(sigma, self.sigma_data)

    def __init__(self, sigma_data: float = 0.5, sigma_min: float = 0.002, sigma_max: float = 80.0):
        self.sigma_data, self._min, self._max = float(sigma_data), float(sigma_min), float(sigma_max)

    def __repr__(self) -> str:
        return f"EDMSampling(sigma_data={self.sigma_data}, sigma {self._min}..{self._max})"

    @property
    def sigma_min(self) -> float:
        return self._min

    @property
    def sigma_max(self) -> float:
        return self._max

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(4 * t)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma.log() / 4


def sigma_to_flow_time(sigma: torch.Tensor) -> torch.Tensor:
    """Flow time t = sigma / (1 + sigma) of a VE sigma (x_flow = x / (1 + sigma))."""
    return sigma / (1 + sigma)


def flow_time_to_sigma(t: torch.Tensor) -> torch.Tensor:
    """VE sigma = t / (1 - t) of flow time t in [0, 1) (infinite at t = 1)."""
    return t / (1 - t)


def time_shift(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Shifted flow time s t / (1 + (s - 1) t) (Esser et al. 2024, SD3); Flux uses shift = exp(mu).

    The same map in VE space is sigma' = shift * sigma."""
    return shift * t / (1 + (shift - 1) * t)


class RectifiedFlowSampling(ModelSampling):
    """Rectified flow x_t = (1 - t) x0 + t eps (Liu et al. 2023): sigma = t / (1 - t); network time = multiplier * t.

    `shift` is the static time shift schedules should apply (SD3: 3.0); the network always sees
    the true flow time of x. The sigma range is that of shifted times t_min..t_max (t = 1,
    pure noise, is infinite in VE space, hence t_max < 1)."""

    def input_scale(self, sigma: torch.Tensor) -> torch.Tensor:
        return flow_input_scale(sigma)

    def __init__(self, shift: float = 1.0, multiplier: float = 1.0, t_min: float = 1e-3, t_max: float = 1 - 1e-3):
        if not 0 < t_min < t_max < 1:
            raise ValueError(f"need 0 < t_min < t_max < 1, got t_min={t_min}, t_max={t_max}")
        self.shift, self.multiplier = float(shift), float(multiplier)
        self.t_min, self.t_max = float(t_min), float(t_max)

    def __repr__(self) -> str:
        return f"RectifiedFlowSampling(shift={self.shift}, multiplier={self.multiplier})"

    def _edge(self, t: float) -> float:
        return float(flow_time_to_sigma(time_shift(torch.tensor(t, dtype=torch.float64), self.shift)))

    @property
    def sigma_min(self) -> float:
        return self._edge(self.t_min)

    @property
    def sigma_max(self) -> float:
        return self._edge(self.t_max)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return flow_time_to_sigma(t / self.multiplier)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return sigma_to_flow_time(sigma) * self.multiplier
