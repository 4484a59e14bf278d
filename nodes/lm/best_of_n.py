"""lm.best_of_n: N ancestral samples per prompt, scored by a reward potential; the best per prompt, or all."""
from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from ..api import Node, node
from ..core.context import NodeContext
from .common import TokenBudget, start_rows
from .decoding import decode
from .generate import ancestral
from .generations import Generations
from .model import LanguageModel
from .potential import Potential
from .prompt import Prompts


@node("lm.best_of_n", version=1)
class BestOfN(Node):
    """Best-of-N sampling (rejection by reward ranking; e.g. Stiennon et al. 2020, Nakano et al. 2021): the
    reward of a text is the potential's complete log-weight; the samples are lm.generate's, draw for draw."""

    uses_seed: ClassVar[bool] = True
    max_new_tokens: int = Field(32, ge=1, le=1_000_000, description="most tokens generated per row")
    particles: int = Field(8, ge=1, le=1_000_000, description="N: samples per prompt")
    keep: Literal["best", "all"] = Field("best", description="'best': one row per prompt (the first of ties); "
                                         "'all': every sample, with its reward as log_weight")

    def run(self, lm: LanguageModel, prompt: Prompts, reward: Potential, ctx: NodeContext) -> Generations:
        """Rows with log_weight = reward (a row cut by max_new_tokens is scored on its text as it stands)."""
        state, group, groups = start_rows(lm, prompt, self.particles, self.max_new_tokens, ctx.device)
        budget = TokenBudget(groups)
        state = decode(lm, state, group, ancestral(ctx.noise), self.max_new_tokens, budget, ctx)
        texts = [lm.vocab.decode(state.generated(i)) for i in range(state.batch)]
        r = reward.complete(texts).to(torch.float64).cpu()  # (G N,)
        best = r.reshape(groups, self.particles).argmax(1) + torch.arange(groups) * self.particles  # (G,)
        top = r[best]
        ctx.record(**budget.report(), reward_evaluations=len(texts), reward_mean=float(r.mean()),
                   best_reward_mean=float(top.mean()))
        if self.keep == "all":
            return Generations.of(state, lm.vocab, log_weight=r, group=group)
        return Generations.of(state[best.to(state.device)], lm.vocab, log_weight=top, group=group[best.to(group.device)])
