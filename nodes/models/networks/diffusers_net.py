"""A diffusers UNet2DModel / DiTTransformer2DModel seen as a Labelled model in x = x0 + sigma * eps.

`DiffusersNet` adapts the module to the `net(x_in, t_in, label=...)` call of
parametrisation.NetworkDenoiser (class labels as a (B,) tensor, the learned-variance half of
the output dropped, the module's dtype on the inside); `scheduler_sampling` reads a diffusers
scheduler config into our ModelSampling and prediction type; `DiffusersDenoiser` binds a class
(or the null class) as model.condition asks. diffusers itself is imported by the caller only."""
from __future__ import annotations

from typing import Any, get_args

import torch

from ....graph.errors import NodeError
from ...core.model import ModelSampling
from ..labelled import Labelled
from ..parametrisation import NetworkDenoiser, Prediction, TimestepMode
from ..sampling import BetaSchedule, DiscreteVPSampling, RectifiedFlowSampling

# diffusers' prediction_type names -> ours; flow-matching schedulers always predict the velocity eps - x0
PREDICTION_TYPES: dict[str, Prediction] = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
DDPM_DEFAULTS: dict[str, Any] = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 0.0001,
                                 "beta_end": 0.02, "prediction_type": "epsilon", "rescale_betas_zero_snr": False}


class DiffusersNet(torch.nn.Module):
    """`module(x, t, class_labels=...)` as net(x_in (B, C, H, W), t_in (B,), label) -> (B, C, H, W)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: int | None = None) -> torch.Tensor:
        dtype = next(self.module.parameters()).dtype
        labels = None if label is None else torch.full((x.shape[0],), label, dtype=torch.long, device=x.device)  # (B,)
        out = self.module(x.to(dtype), t, class_labels=labels, return_dict=False)[0]  # (B, C or 2C, H, W)
        channels = x.shape[1]
        if out.shape[1] == 2 * channels:  # learned variance (Nichol & Dhariwal 2021; DiT): keep the mean half
            out = out[:, :channels]
        return out.to(x.dtype)


def scheduler_sampling(config: dict[str, Any], where: str) -> tuple[ModelSampling, Prediction]:
    """The noise process and prediction type of a diffusers scheduler config (`where` names its file)."""
    cfg = {**DDPM_DEFAULTS, **config}
    steps = int(cfg["num_train_timesteps"])
    if "FlowMatch" in str(cfg.get("_class_name", "")):
        # Flux-style dynamic shifting depends on the resolution: schedule.time_shift applies it
        shift = 1.0 if cfg.get("use_dynamic_shifting") else float(cfg.get("shift", 1.0))
        return RectifiedFlowSampling(shift, multiplier=steps), "flow"
    prediction = PREDICTION_TYPES.get(cfg["prediction_type"])
    if prediction is None:
        raise NodeError(f"{where}: prediction_type {cfg['prediction_type']!r} is not one of "
                        f"{', '.join(PREDICTION_TYPES)}; set param 'prediction'")
    if cfg.get("trained_betas") is not None:
        betas = torch.as_tensor(cfg["trained_betas"], dtype=torch.float64)  # (N,)
        return DiscreteVPSampling(torch.cumprod(1 - betas, dim=0)), prediction
    if cfg["beta_schedule"] not in get_args(BetaSchedule):
        raise NodeError(f"{where}: beta_schedule {cfg['beta_schedule']!r} is not supported; use one of "
                        f"{', '.join(get_args(BetaSchedule))} or give 'trained_betas'")
    return DiscreteVPSampling.from_betas(cfg["beta_schedule"], steps, float(cfg["beta_start"]),
                                         float(cfg["beta_end"]), bool(cfg["rescale_betas_zero_snr"])), prediction


class DiffusersDenoiser(Labelled):
    """A diffusers network under a parametrisation (Karras et al. 2022, eq. 7), bound to `label` or the null class.

    `classes` is 0 for an unconditional network; `null_class` is the label index trained as
    'no class' (classifier-free guidance's dropped label), None when the network has none."""

    def __init__(self, net: DiffusersNet, sampling: ModelSampling, prediction: Prediction,
                 timestep: TimestepMode, classes: int, null_class: int | None, label: int | None = None):
        self.net, self.classes, self.null_class, self.label = net, classes, null_class, label
        self.inner = NetworkDenoiser(net, sampling, prediction, timestep,
                                     cond={"label": null_class if label is None else label} if classes else None)

    def __repr__(self) -> str:
        return f"DiffusersDenoiser({self.inner!r}, classes={self.classes}, label={self.label})"

    @property
    def sampling(self) -> ModelSampling:
        return self.inner.sampling

    def _with(self, net: DiffusersNet, label: int | None) -> DiffusersDenoiser:
        return DiffusersDenoiser(net, self.sampling, self.inner.prediction, self.inner.timestep_mode, self.classes,
                                 self.null_class, label)

    def restricted(self, label: int) -> DiffusersDenoiser:
        """The network bound to class `label` (NodeError for an unconditional network or out of range)."""
        if not self.classes:
            raise NodeError(f"this diffusers model is unconditional (no class embedding), so it cannot be bound to "
                            f"label {label}; remove model.condition or set its label to null")
        if not 0 <= label < self.classes:
            raise NodeError(f"label {label} is out of range: this model has classes 0..{self.classes - 1}")
        return self._with(self.net, label)

    def broadened(self, factor: float) -> DiffusersDenoiser:
        raise NodeError("'weakness' applies to analytic mixtures only; for a network, load a weaker network "
                        "as the autoguidance guide")

    def to(self, device: torch.device) -> DiffusersDenoiser:
        return self._with(self.net.to(device), self.label)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x0 (B, C, H, W) of x (B, C, H, W) at sigma (B,)."""
        if self.classes and self.label is None and self.null_class is None:
            raise NodeError("this class-conditional diffusers model has no null class, so it has no unconditional "
                            "denoiser: bind a class with model.condition (label), or set the model's 'null_class' "
                            "if one of its labels was trained as 'no class'")
        return self.inner(x, sigma)
