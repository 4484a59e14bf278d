"""Math shared by the schedule nodes: the final zero, log-linear resampling, the
sigma_min < sigma_max check, and reading a model's discrete sigma table (VE <-> flow time and
beta schedules live with the models, in nodes/models/sampling.py).

All schedules are computed in float64 on the CPU (Sigmas stores float64); formulas follow
k-diffusion and ComfyUI, written here once."""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node
from ..core.validators import greater_than
from ..core.model import Model

F64 = torch.float64


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    """(S,) -> (S + 1,): the levels followed by sigma = 0 (k-diffusion's append_zero)."""
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def loglinear_interp(levels: torch.Tensor, n: int) -> torch.Tensor:
    """(L,) decreasing positive levels -> (n,): log sigma linearly interpolated over a normalised
    index in [0, 1], so both ends are kept (Sabour et al. 2024, Align Your Steps how-to)."""
    index = np.linspace(0, 1, levels.numel())  # (L,)
    log = np.interp(np.linspace(0, 1, n), index, levels.to(F64).log().numpy())  # (n,)
    return torch.from_numpy(np.exp(log))  # (n,)


class SigmaRange(Node):
    """Base of schedules on [sigma_min, sigma_max] (EDM defaults); not a node kind itself."""

    steps: int = Field(10, ge=1, description="solver steps (levels before the final 0)")
    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(80.0, gt=0, validate_default=True)

    _above_min = greater_than("sigma_max", "sigma_min")


def discrete_table(model: Model, kind: str) -> torch.Tensor:
    """(N,) ascending float64 sigma of each training timestep, or a NodeError saying what to use instead."""
    table = model.sampling.discrete_sigmas
    if table is None:
        raise NodeError(f"input 'model': {kind} indexes a discrete-time model's sigma table, but this model "
                        f"({type(model.sampling).__name__}) is continuous-time; use schedule.normal or "
                        f"schedule.karras instead")
    return table.detach().to(device="cpu", dtype=F64)
