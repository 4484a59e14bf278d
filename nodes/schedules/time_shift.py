"""schedule.time_shift: the SD3 / Flux timestep shift of a flow-model schedule (Esser et al. 2024).

The shift acts on rectified-flow time t = sigma / (1 + sigma) (our sigmas are VE sigmas):
    t' = s t / (1 + (s - 1) t),   s = `shift` (SD3) or s = e^mu (Flux),
with Flux's mu linear in the number of image tokens, from (base_tokens, base_shift) to
(max_tokens, max_shift). In VE sigma = t / (1 - t) this is exactly sigma' = s * sigma, since
t' / (1 - t') = s t / (1 - t), so the node scales sigma (no round trip through t, which loses
digits near t = 1). Feed it a flow-model schedule (e.g. schedule.normal of a rectified-flow
model, uniform in t); 0 stays 0. ComfyUI and diffusers bake the same shift into the model's
sigma table (ModelSamplingSD3/Flux; FlowMatchEulerDiscreteScheduler); the network still sees
the shifted t, so shifting the schedule is the whole effect."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from ..api import Node, node
from ..core.sigmas import Sigmas

FLUX_ONLY = ("image_tokens", "base_shift", "max_shift", "base_tokens", "max_tokens")
FLUX_DEFAULTS = {"image_tokens": 4096, "base_shift": 0.5, "max_shift": 1.15, "base_tokens": 256, "max_tokens": 4096}


def flux_mu(image_tokens: int, base_shift: float, max_shift: float, base_tokens: int, max_tokens: int) -> float:
    """Flux's mu: linear in image tokens through (base_tokens, base_shift) and (max_tokens, max_shift)
    (diffusers' calculate_shift); the shift factor is e^mu."""
    slope = (max_shift - base_shift) / (max_tokens - base_tokens)
    return base_shift + slope * (image_tokens - base_tokens)


@node("schedule.time_shift", version=1)
class TimeShift(Node):
    """Implements the timestep shift of Esser et al. (2024, SD3, Sec. 5.3.2) and Flux's resolution-dependent shift (Labs 2024)."""

    mode: Literal["sd3", "flux"] = Field("sd3", description="'sd3': a fixed shift; 'flux': e^mu, mu from image tokens")
    shift: float | None = Field(None, gt=0, description="sd3: the shift s (default 3.0, SD3's value)")
    image_tokens: int | None = Field(None, ge=1, description="flux: latent tokens, (H/16)*(W/16); default 4096")
    base_shift: float | None = Field(None, description="flux: mu at base_tokens (default 0.5)")
    max_shift: float | None = Field(None, description="flux: mu at max_tokens (default 1.15)")
    base_tokens: int | None = Field(None, ge=1, description="flux: default 256")
    max_tokens: int | None = Field(None, ge=1, validate_default=True, description="flux: default 4096")

    @field_validator("shift", *FLUX_ONLY)
    @classmethod
    def _applies(cls, value: object, info: ValidationInfo) -> object:
        """A parameter the chosen mode ignores is an error, not silently dropped."""
        mode = info.data.get("mode")
        wanted = "flux" if info.field_name in FLUX_ONLY else "sd3"
        if value is not None and mode is not None and mode != wanted:
            raise ValueError(f"'{info.field_name}' is only used by mode '{wanted}', not '{mode}'; remove it")
        return value

    @field_validator("max_tokens")
    @classmethod
    def _distinct_tokens(cls, value: int | None, info: ValidationInfo) -> int | None:
        """mu is a line through two token counts, so they must differ."""
        base = info.data.get("base_tokens") or FLUX_DEFAULTS["base_tokens"]
        if info.data.get("mode") == "flux" and (value or FLUX_DEFAULTS["max_tokens"]) == base:
            raise ValueError(f"must differ from base_tokens ({base}): mu is interpolated between them")
        return value

    @property
    def factor(self) -> float:
        """The shift s: `shift` (sd3) or e^mu with mu linear in image tokens (flux)."""
        if self.mode == "sd3":
            return 3.0 if self.shift is None else self.shift
        p = {k: FLUX_DEFAULTS[k] if getattr(self, k) is None else getattr(self, k) for k in FLUX_ONLY}
        return math.exp(flux_mu(**p))

    def run(self, sigmas: Sigmas) -> Sigmas:
        """t' = s t / (1 + (s - 1) t) in flow time, which is sigma' = s sigma in VE sigma."""
        return Sigmas(sigmas.values * self.factor)  # (S + 1,)
