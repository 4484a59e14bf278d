"""lm.generate: ancestral sampling, each token an exact draw from the (transformed) LM's next-token
distribution, keyed by (seed, particle, position): the same seed gives the same texts whatever the batch."""
from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ..api import Node, node
from ..core.context import NodeContext
from ..core.noise import NoiseSource
from .common import TokenBudget, start_rows
from .decoding import Choose, decode
from .draws import categorical
from .generations import Generations
from .model import LanguageModel
from .prompt import Prompts


def ancestral(noise: NoiseSource) -> Choose:
    """Pick each row's token by a Gumbel-max draw keyed by its particle id and position."""
    return lambda logp, state: categorical(noise, logp, state.particle, state.position)


@node("lm.generate", version=1)
class Generate(Node):
    """Ancestral sampling from a language model (exact draws of the model's own sequence distribution)."""

    uses_seed: ClassVar[bool] = True
    max_new_tokens: int = Field(32, ge=1, le=1_000_000, description="most tokens generated per row")
    particles: int = Field(1, ge=1, le=1_000_000, description="independent samples (rows) per prompt")

    def run(self, lm: LanguageModel, prompt: Prompts, ctx: NodeContext) -> Generations:
        """particles rows per prompt, prompt-major; log_weight 0 (the rows are exact, unweighted samples)."""
        state, group, groups = start_rows(lm, prompt, self.particles, self.max_new_tokens, ctx.device)
        budget = TokenBudget(groups)
        state = decode(lm, state, group, ancestral(ctx.noise), self.max_new_tokens, budget, ctx)
        out = Generations.of(state, lm.vocab, group=group)
        ctx.record(**budget.report(), rows=len(out), finished=int(out.finished.sum()))
        return out
