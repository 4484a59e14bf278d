"""model.gmm: an analytic Gaussian-mixture model (a ring, a grid, random or custom means),
seen through any network parametrisation (the `Parametrisation` options; default: exact x0).

Each parameter applies to some presets only; setting one the chosen preset ignores is an
error, so a workflow never silently means something else. Cross-field checks are field
validators reading the fields declared before them (`info.data`), so every error names the
parameter it is about."""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from ..api import Node, node
from .gaussian_mixture import GaussianMixture
from .parametrisation import Parametrisation

Preset = Literal["ring", "grid", "random", "custom"]
StdRows = list[float | list[float]]  # per component: one std, or one per coordinate
DEFAULT_MODES = {"ring": 8, "grid": 9, "random": 8}
APPLIES_TO: dict[str, tuple[str, ...]] = {
    "modes": ("ring", "grid", "random"), "scale": ("ring", "grid", "random"),
    "dim": ("random",), "preset_seed": ("random",), "stds": ("custom",),
}


@node("model.gmm", version=2)
class ModelGMM(Node, Parametrisation):
    """A Gaussian mixture with an exact denoiser (the ideal denoiser of Karras et al. 2022, eq. 3)."""

    preset: Preset = "ring"
    modes: int | None = Field(None, ge=1, description="components; default ring 8, grid 9 (3x3), random 8")
    scale: float = Field(4.0, gt=0, description="ring radius, grid spacing, or std of random means")
    std: float = Field(0.5, gt=0, description="std of every component (custom: unless stds is given)")
    dim: int = Field(2, ge=1, description="dimension of 'random' means (ring and grid are 2-D)")
    preset_seed: int = Field(0, ge=0, description="seed of the 'random' means (not the workflow seed)")
    means: list[list[float]] | None = Field(None, validate_default=True,
                                            description="'custom' means, K rows of D numbers")
    stds: StdRows | None = Field(None, description="'custom' stds: per component, a number or D")
    weights: list[float] | None = Field(None, description="mixture weights (K, >= 0), normalised; default equal")
    classes: list[int] | None = Field(None, description="class label (>= 0) of each component, for model.condition; "
                                      "default unlabelled")

    @field_validator("modes", "scale", "dim", "preset_seed", "stds")
    @classmethod
    def _applies(cls, value: object, info: ValidationInfo) -> object:
        """A parameter the chosen preset ignores is an error, not silently dropped."""
        preset = info.data.get("preset")
        if preset is not None and preset not in APPLIES_TO[info.field_name]:
            users = " or ".join(f"'{p}'" for p in APPLIES_TO[info.field_name])
            raise ValueError(f"'{info.field_name}' is not used by preset '{preset}' (only by {users}); remove it")
        return value

    @field_validator("modes")
    @classmethod
    def _square_grid(cls, value: int | None, info: ValidationInfo) -> int | None:
        """A grid is side x side, so its number of modes is a square."""
        if info.data.get("preset") == "grid" and value is not None and math.isqrt(value) ** 2 != value:
            raise ValueError("preset 'grid' needs a square number of modes (4, 9, 16, ...)")
        return value

    @field_validator("means")
    @classmethod
    def _means(cls, value: list[list[float]] | None, info: ValidationInfo) -> list[list[float]] | None:
        """Custom means are required, rectangular and used by no other preset."""
        preset = info.data.get("preset")
        if preset == "custom" and not value:
            raise ValueError("preset 'custom' needs 'means': a list of K rows of D numbers")
        if preset not in (None, "custom") and value is not None:
            raise ValueError(f"'means' is not used by preset '{preset}' (only by 'custom'); remove it")
        if value and (not value[0] or len({len(row) for row in value}) != 1):
            raise ValueError("every row of 'means' needs the same number (>= 1) of coordinates")
        return value

    @field_validator("stds")
    @classmethod
    def _stds(cls, value: StdRows | None, info: ValidationInfo) -> StdRows | None:
        """Custom stds: one entry per mean, each a number or a row of D, all > 0."""
        means = info.data.get("means")
        if value is None or not means:
            return value
        rows = std_rows(value)
        if len(rows) != len(means) or any(len(row) not in (1, len(means[0])) for row in rows):
            raise ValueError(f"needs {len(means)} entries (one per row of 'means'), each a number or "
                             f"a row of {len(means[0])}")
        if any(s <= 0 for row in rows for s in row):
            raise ValueError("every std must be > 0")
        return value

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        """One non-negative weight per component, with a positive sum."""
        if value is None:
            return value
        if any(w < 0 for w in value) or not sum(value) > 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        k = count_modes(info.data)
        if k is not None and len(value) != k:
            raise ValueError(f"has {len(value)} entries, but the mixture has {k} components; give one weight each")
        return value

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: list[int] | None, info: ValidationInfo) -> list[int] | None:
        """One label >= 0 per component."""
        if value is None:
            return value
        if any(c < 0 for c in value):
            raise ValueError("class labels must be >= 0")
        k = count_modes(info.data)
        if k is not None and len(value) != k:
            raise ValueError(f"has {len(value)} entries, but the mixture has {k} components; give one label each")
        return value

    def run(self) -> GaussianMixture:
        """Build the mixture (float64 parameters, weights normalised) under the chosen parametrisation."""
        means = preset_means(self)  # (K, D)
        k = means.shape[0]
        weights = torch.ones(k, dtype=torch.float64) if self.weights is None else \
            torch.as_tensor(self.weights, dtype=torch.float64)  # (K,)
        return GaussianMixture(means, custom_stds(self.stds, means, self.std), weights,
                               Parametrisation.model_validate(self.options()), self.classes)


def preset_means(p: ModelGMM) -> torch.Tensor:
    """The (K, D) float64 means of the preset: a ring, a centred square grid, random or custom."""
    if p.preset == "custom":
        return torch.tensor(p.means, dtype=torch.float64)
    k = p.modes or DEFAULT_MODES[p.preset]
    if p.preset == "ring":
        angle = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)  # (K,)
        return p.scale * torch.stack([angle.cos(), angle.sin()], dim=1)
    if p.preset == "grid":
        side = math.isqrt(k)
        axis = (torch.arange(side, dtype=torch.float64) - (side - 1) / 2) * p.scale  # (side,)
        return torch.cartesian_prod(axis, axis)  # (K, 2)
    gen = torch.Generator().manual_seed(p.preset_seed)
    return p.scale * torch.randn(k, p.dim, generator=gen, dtype=torch.float64)


def custom_stds(stds: StdRows | None, means: torch.Tensor, std: float) -> torch.Tensor:
    """The (K, D) stds: `std` everywhere, or one per component, or one per component and coordinate."""
    if stds is None:
        return torch.full_like(means, std)
    rows = [row * means.shape[1] if len(row) == 1 else row for row in std_rows(stds)]
    return torch.tensor(rows, dtype=torch.float64)


def std_rows(stds: StdRows) -> list[list[float]]:
    """Per-component std rows: a number becomes a one-element row (isotropic component)."""
    return [row if isinstance(row, list) else [row] for row in stds]


def count_modes(data: dict) -> int | None:
    """The number of components implied by the fields validated so far (None if unknown)."""
    preset = data.get("preset")
    if preset == "custom":
        return len(data["means"]) if data.get("means") else None
    if preset is None or "modes" not in data:
        return None
    return data["modes"] or DEFAULT_MODES[preset]
