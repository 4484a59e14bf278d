"""latent.preview: the latent -> RGB projection of a pipeline family, for progress previews of `sample`
(its optional `preview` input): every `every` steps the sampler's current x0 estimate is projected and
streamed as a StepPreview event (the CLI ignores it; `samplegraph serve` shows it on its page).

The factors are ComfyUI's published latent2rgb factors (comfy/latent_formats.py: SD15, SDXL, SD3, Flux; the
SDXL, SD3 and Flux ones with a bias), fitted by its authors for the scaled latents the sampler sees, i.e.
(z - shift_factor) * scaling_factor, the same scale as samplegraph's latents. The numbers are data, cited,
not derived here; a tiny random VAE's latents are not pictures, so on test pipelines the preview is only
the projection of whatever the sampler holds."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.preview import Preview
from ..pipelines.types import TextModel

# family -> (factors: one [R, G, B] row per latent channel, bias [R, G, B]); ComfyUI comfy/latent_formats.py
FACTORS: dict[str, tuple[list[list[float]], list[float]]] = {
    "sd": ([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350], [-0.2829, 0.1762, 0.2721],
            [-0.2120, -0.2616, -0.7177]], [0.0, 0.0, 0.0]),
    "sdxl": ([[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362],
              [-0.3165, -0.2492, -0.2188]], [0.1084, -0.0175, -0.0011]),
    "sd3": ([[-0.0922, -0.0175, 0.0749], [0.0311, 0.0633, 0.0954], [0.1994, 0.0927, 0.0458],
             [0.0856, 0.0339, 0.0902], [0.0587, 0.0272, -0.0496], [-0.0006, 0.1104, 0.0309],
             [0.0978, 0.0306, 0.0427], [-0.0042, 0.1038, 0.1358], [-0.0194, 0.0020, 0.0669],
             [-0.0488, 0.0130, -0.0268], [0.0922, 0.0988, 0.0951], [-0.0278, 0.0524, -0.0542],
             [0.0332, 0.0456, 0.0895], [-0.0069, -0.0030, -0.0810], [-0.0596, -0.0465, -0.0293],
             [-0.1448, -0.1463, -0.1189]], [0.2394, 0.2135, 0.1925]),
    "flux": ([[-0.0346, 0.0244, 0.0681], [0.0034, 0.0210, 0.0687], [0.0275, -0.0668, -0.0433],
              [-0.0174, 0.0160, 0.0617], [0.0859, 0.0721, 0.0329], [0.0004, 0.0383, 0.0115],
              [0.0405, 0.0861, 0.0915], [-0.0236, -0.0185, -0.0259], [-0.0245, 0.0250, 0.1180],
              [0.1008, 0.0755, -0.0421], [-0.0515, 0.0201, 0.0011], [0.0428, -0.0012, -0.0036],
              [0.0817, 0.0765, 0.0749], [-0.1264, -0.0522, -0.1103], [-0.0280, -0.0881, -0.0499],
              [-0.1262, -0.0982, -0.0778]], [-0.0329, -0.0718, -0.0851]),
}
Family = Literal["auto", "sd", "sdxl", "sd3", "flux"]


@node("latent.preview")
class LatentPreview(Node):
    """A linear latent -> RGB projection for progress previews (ComfyUI's latent2rgb factors per family)."""

    family: Family = Field("auto", description="whose factors; 'auto' = the family of the 'model' input")
    every: int = Field(1, ge=1, description="preview the x0 estimate every this many steps (and after the last)")

    def run(self, model: TextModel | None = None) -> Preview:
        family = self.family
        if family == "auto":
            if model is None:
                raise NodeError("param 'family' is 'auto' but input 'model' is not connected; connect the pipeline's "
                                "model (pipe.model) or name the family (sd, sdxl, sd3, flux)")
            family = model.family
        if family not in FACTORS:
            raise NodeError(f"no latent preview factors for the {family!r} family; known: {', '.join(FACTORS)}")
        factors, bias = FACTORS[family]
        return Preview(torch.tensor(factors, dtype=torch.float64), torch.tensor(bias, dtype=torch.float64),
                       self.every, family)
