"""lm.greedy: greedy decoding, each row's most likely next token (the lowest id among ties)."""
from __future__ import annotations

from pydantic import Field

from ..api import Node, node
from ..core.context import NodeContext
from .common import TokenBudget, start_rows
from .decoding import decode
from .generations import Generations
from .model import LanguageModel
from .prompt import Prompts


@node("lm.greedy", version=1)
class Greedy(Node):
    """Greedy decoding: the argmax token at every step (deterministic, so the seed is not an input)."""

    max_new_tokens: int = Field(32, ge=1, le=1_000_000, description="most tokens generated per row")
    particles: int = Field(1, ge=1, le=1_000_000, description="rows per prompt (all equal: greedy draws nothing)")

    def run(self, lm: LanguageModel, prompt: Prompts, ctx: NodeContext) -> Generations:
        """particles rows per prompt, prompt-major; log_weight 0."""
        state, group, groups = start_rows(lm, prompt, self.particles, self.max_new_tokens, ctx.device)
        budget = TokenBudget(groups)
        state = decode(lm, state, group, lambda logp, s: logp.argmax(-1), self.max_new_tokens, budget, ctx)
        out = Generations.of(state, lm.vocab, group=group)
        ctx.record(**budget.report(), rows=len(out), finished=int(out.finished.sum()))
        return out
