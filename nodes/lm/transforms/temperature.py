"""lm.temperature: next-token log-probs divided by a temperature, renormalised."""
from __future__ import annotations

import torch
from pydantic import Field

from ...api import Node, node
from ..model import LMTransform, LanguageModel, normalise
from ..state import TokenState


class Temperature(LMTransform):
    """p(x)^(1/T) / Z per next-token distribution (Ackley et al. 1985; transformers' TemperatureLogitsWarper)."""

    def __init__(self, inner: LanguageModel, temperature: float):
        super().__init__(inner)
        self.temperature = temperature

    def transform(self, logp: torch.Tensor, state: TokenState, window: int) -> torch.Tensor:
        return normalise(logp / self.temperature)  # (B, W, V)


@node("lm.temperature", version=1)
class LMTemperature(Node):
    """Temperature scaling of a language model's next-token distributions (T < 1 sharpens, T > 1 flattens)."""

    temperature: float = Field(1.0, gt=0.0, description="T > 0; use lm.greedy for the T -> 0 limit")

    def run(self, lm: LanguageModel) -> LanguageModel:
        return Temperature(lm, self.temperature)
