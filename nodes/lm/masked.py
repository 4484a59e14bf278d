"""lm.masked: locally constrained decoding by masking the whole vocabulary each token (the baseline of Lipkin et
al. 2025, "Fast Controlled Generation from Language Models with Adaptive Weighted Rejection Sampling")."""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from .common import TokenBudget, start_rows
from .draws import categorical
from .generations import Generations
from .model import LanguageModel
from .potential import CountingPotential, Evaluations, Potential, TokenPotential
from .prompt import Prompts
from .state import PAD, TokenState


@node("lm.masked", version=1)
class Masked(Node):
    """Locally constrained decoding (Lipkin et al. 2025, baseline): q(t | x) ~ p(t | x) phi(x t) / phi(x) from a
    full-vocabulary mask; each row's log-weight sums the log local normalisers, log p(x) phi(x) / q(x)."""

    uses_seed: ClassVar[bool] = True
    particles: int = Field(1, ge=1, description="rows per prompt")
    max_new_tokens: int = Field(32, ge=1, description="tokens generated at most per row")

    def run(self, lm: LanguageModel, prompt: Prompts, constraint: Potential, ctx: NodeContext) -> Generations:
        """One constrained text per row, weighted by its product of local normalisers (a row cut by
        max_new_tokens keeps the weight of its prefix and is marked unfinished)."""
        state, group, groups = start_rows(lm, prompt, self.particles, self.max_new_tokens, ctx.device)
        evaluations, budget = Evaluations(), TokenBudget(groups)
        potential = CountingPotential(constraint.bind(lm.vocab), evaluations)
        log_w = torch.zeros(state.batch, dtype=torch.float64)  # (B,)
        last = potential.prefix_of(state)  # (B,) log phi of each row's text so far
        for i in range(self.max_new_tokens):
            ctx.check_cancelled()
            if bool(state.done.all()):
                break
            logp, state = budget.call(lm, state)  # (B, 1, V)
            state, log_z, last = masked_step(potential, ctx, state, logp[:, 0], last, group, budget)
            log_w += log_z
            ctx.progress(i + 1, self.max_new_tokens)
        ctx.record(**budget.report(), **evaluations.report(), log_weight_mean=float(log_w.mean()),
                   finished=int(state.done.sum()))
        return Generations.of(state, lm.vocab, log_weight=log_w, group=group)


def masked_step(potential: TokenPotential, ctx: NodeContext, state: TokenState, logp: torch.Tensor,
                last: torch.Tensor, group: torch.Tensor, budget: TokenBudget
                ) -> tuple[TokenState, torch.Tensor, torch.Tensor]:
    """One token for every live row from its masked next-token distribution logp (B, V): the new state, each
    row's log local normaliser (B,) (0 for rows already done) and the potential of each row's new text (B,)."""
    live = (~state.done).nonzero().flatten()  # (L,)
    view = state.replace(cache=None)[live]  # the live rows, without gathering the model's cache
    weights = potential.mask(view).to(logp.device)  # (L, V) log phi(x t)
    scored = logp[live].to(torch.float64) + weights  # (L, V)
    total = torch.logsumexp(scored, -1)  # (L,)
    stuck = (~torch.isfinite(total)).nonzero().flatten()
    if stuck.numel():
        r = int(live[stuck[0]])
        raise NodeError(f"the constraint rejects every token of row {r} (prompt {int(group[r])}) after "
                        f"{int(state.generated_length[r])} generated tokens: it cannot be satisfied from there")
    token = categorical(ctx.noise, scored - total[:, None], view.particle, view.position)  # (L,)
    full = torch.full((state.batch,), PAD, dtype=torch.long, device=state.device)
    full[live] = token.to(state.device)
    chosen = torch.zeros(state.batch, dtype=torch.float64)
    chosen[live] = logp[live, token].to(torch.float64).cpu()
    log_z, new_last = torch.zeros(state.batch, dtype=torch.float64), last.clone()
    log_z[live] = (total - last[live].to(total.device)).cpu()
    new_last[live] = weights[torch.arange(live.numel()), token].cpu()
    appended = ~state.done
    state = state.append(full, logp=chosen.to(state.device), eos=potential.vocab.is_eos(full))
    budget.count_tokens(group, appended)
    return state, log_z, new_last
