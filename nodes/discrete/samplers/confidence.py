"""discrete_sampler.confidence: parallel decoding that fills, at each step, the masked positions the
model is surest of (Chang et al. 2022, MaskGIT; margin: Kim et al. 2025; semi-autoregressive blocks:
Nie et al. 2025, LLaDA). How many per step follows the mask schedule; `score="random"` decodes a
uniformly random subset instead (with one position per step it is exact ancestral sampling)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ....graph.errors import NodeError
from ...api import node
from ...core.noise import NoiseSource
from ...lm.model import normalise
from ..denoiser import DiscreteDenoiser
from ..draws import ORDER, TOKEN, categorical, uniform
from ..sampler import DiscreteSampler
from ..schedule import MaskSchedule
from ..state import DiscreteState
from .parallel import block_plan, block_window, decode_counts, position_scores, top_k_positions
from .unmasking import next_times


@node("discrete_sampler.confidence", version=1)
class Confidence(DiscreteSampler):
    """Top-k parallel unmasking by confidence, margin or entropy (Chang et al. 2022; Kim et al. 2025; Nie et al. 2025)."""

    score: Literal["confidence", "margin", "entropy", "random"] = Field(
        "confidence", description="which masked positions a step decodes: highest p(drawn token) (MaskGIT, LLaDA's "
        "low_confidence remasking), largest top-1 minus top-2 probability, lowest entropy, or a random subset")
    temperature: float = Field(1.0, ge=0, le=100, description="tokens drawn from p(x0 | x_t)^(1/T); 0 = argmax")
    block_length: int | None = Field(None, ge=1, description="semi-autoregressive blocks of this many positions, "
                                     "decoded left to right, the steps split evenly (LLaDA); None = one block")
    score_noise: float = Field(0.0, ge=0, le=100, description="MaskGIT's Gumbel noise on log-scores, scaled by t "
                               "(annealed to 0); 0 = none")

    def step(self, den: DiscreteDenoiser, schedule: MaskSchedule, state: DiscreteState,
             noise: NoiseSource) -> DiscreteState:
        blocks, per_block = block_plan(schedule, state.length, self.block_length)
        inside, local = block_window(state, blocks, per_block)  # (B, L), (B,)
        holes = (inside & ~state.fixed).sum(-1)  # (B,) positions the block generates
        k = decode_counts(schedule, holes, local, per_block)  # (B,)
        logp = den(state.tokens, state.t)  # (B, L, V)
        if self.temperature == 0:
            chosen = logp.argmax(-1)  # (B, L)
        else:
            chosen = categorical(noise, normalise(logp.to(torch.float64) / self.temperature), state.particle, state.step, TOKEN,
                                 self.precision)
        if self.score == "random":
            scores = uniform(noise, state.particle, state.step, (state.length,), ORDER)  # (B, L)
        else:
            scores = position_scores(logp, chosen, self.score)
            if self.score_noise > 0:
                g = noise.gumbel(state.particle, state.step, (state.length,), slot=ORDER)  # (B, L)
                scores = torch.log(scores.clamp(min=1e-300)) if self.score != "entropy" else scores
                scores = scores + self.score_noise * state.t[:, None] * g
        eligible = inside & state.masked(den.mask_id) & ~state.fixed  # (B, L)
        if bool((eligible.sum(-1) < k).any()):
            raise NodeError("a step was asked to decode more positions than are masked; this is a bug")
        return state.reveal(top_k_positions(scores, eligible, k), chosen, next_times(schedule, state))
