"""model.text_condition: bind a Conditioning to a text-conditioned model, giving a Denoiser.

Conditioning is bound, not passed (docs/ARCHITECTURE.md): CFG with a negative prompt is guidance.cfg
over two bound Denoisers (prompt, negative prompt); its `scale` is diffusers' `guidance_scale`, because
x0 = x - sigma eps is affine in eps, so eps_u + w (eps_c - eps_u) and x0_u + w (x0_c - x0_u) agree."""
from __future__ import annotations

from ..api import Node, node
from ..core.model import Model
from .types import Conditioning, TextModel


@node("model.text_condition")
class ModelTextCondition(Node):
    """The text-conditional denoiser p(x0 | prompt) of a text-conditioned network (Rombach et al. 2022)."""

    def run(self, model: TextModel, cond: Conditioning) -> Model:
        return model.bind(cond)
