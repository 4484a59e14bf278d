"""schedule.flux: FluxPipeline's sigmas for a Flux pipeline's model at an image size.

FluxPipeline steps through flow times t_i = linspace(1, 1/steps, steps), shifted by its scheduler config
(use_dynamic_shifting: s = e^mu, mu = calculate_shift(image tokens) from base/max_image_seq_len and base/max_shift;
else the static `shift`), then 0: in VE sigma = t / (1 - t) the shift is sigma' = s sigma (schedule.time_shift).
The image size must be given here as in latent.empty (the tokens are (H / 2f) (W / 2f)), as ComfyUI's
ModelSamplingFlux takes width and height beside its latent node.

t = 1 (pure noise) is an infinite VE sigma, so the first level is t = 1 - gap. The default 1e-8 is below float32's
resolution at 1: the transformer sees exactly t = 1 and x = noise, as in FluxPipeline; such a latent
(sigma ~ 3e8) needs float64 (latent.empty's dtype), which the Flux network checks."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.sigmas import Sigmas
from ..schedules.common import F64, append_zero
from .flux import FluxTextModel
from .types import TextModel


@node("schedule.flux", version=1)
class FluxSchedule(Node):
    """Implements FluxPipeline's timesteps (Labs 2024): uniform flow times under the resolution shift e^mu of Esser et al. (2024, Sec. 5.3.2)."""

    steps: int = Field(28, ge=1, description="solver steps (FluxPipeline's num_inference_steps)")
    width: int = Field(1024, ge=1, description="image width in pixels, as in latent.empty")
    height: int = Field(1024, ge=1, description="image height in pixels, as in latent.empty")
    gap: float = Field(1e-8, gt=0, lt=1, description="the first level is t = 1 - gap (t = 1 is sigma = inf); 1e-8 "
                                                     "equals FluxPipeline in float32 and needs float64 latents; "
                                                     "float32 latents need gap >= 1e-4")

    def run(self, model: TextModel) -> Sigmas:
        """e^mu t_i / (1 - t_i) for t_i = linspace(1 - gap, 1/steps, steps), then 0."""
        if not isinstance(model, FluxTextModel):
            raise NodeError(f"input 'model' is a {model.family!r} pipeline's model; schedule.flux reads a Flux "
                            f"pipeline's scheduler (use schedule.time_shift for other flow models)")
        if model.shift.unsupported:
            raise NodeError(f"the pipeline's scheduler config sets {', '.join(model.shift.unsupported)}, which "
                            f"FluxPipeline's grid then follows and schedule.flux does not; override them with "
                            f"model.pipeline's 'scheduler' param or use another schedule")
        t = torch.linspace(1.0, 1.0 / self.steps, self.steps, dtype=F64)  # (S,)
        t[0] = min(float(t[0]), 1.0 - self.gap)  # one step: linspace(1, 1, 1)
        factor = model.shift.factor(model.image_tokens(self.width, self.height))
        return Sigmas(append_zero(factor * t / (1 - t)))  # (S + 1,)
