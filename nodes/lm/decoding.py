"""The token loop shared by the one-token-at-a-time strategies (lm.generate, lm.greedy, lm.best_of_n):
one batched next_logprobs call per step over the live rows only; a finished row leaves the batch (its
cache with it), so a step costs what the live rows cost."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..core.context import NodeContext
from .common import TokenBudget
from .model import LanguageModel
from .state import TokenState

# (B, V) next-token log-probs of the live rows and their state -> (B,) int64 chosen tokens
Choose = Callable[[torch.Tensor, TokenState], torch.Tensor]


def decode(lm: LanguageModel, state: TokenState, group: torch.Tensor, choose: Choose, max_new_tokens: int,
           budget: TokenBudget, ctx: NodeContext | None = None) -> TokenState:
    """Rows of `state` extended token by token until EOS or max_new_tokens, each step's token picked by
    `choose`; the returned state (rows in the input order, no model cache) has each chosen token's log p."""
    rows = torch.arange(state.batch, device=state.device)  # (L,) original row of each live row
    parts: list[TokenState] = []
    order: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        if ctx is not None:
            ctx.check_cancelled()
        if state.batch == 0:
            break
        logp, state = budget.call(lm, state)
        logp = logp[:, 0]  # (L, V)
        token = choose(logp, state)  # (L,)
        state = state.append(token, logp.gather(1, token[:, None])[:, 0], eos=lm.vocab.is_eos(token))
        budget.count_tokens(group[rows], torch.ones(state.batch, dtype=torch.bool))
        last = step == max_new_tokens - 1
        leaving = torch.ones_like(state.done) if last else state.done  # (L,)
        if bool(leaving.any()):
            out = leaving.nonzero()[:, 0]
            parts.append(state[out].replace(cache=None))
            order.append(rows[out])
            stay = (~leaving).nonzero()[:, 0]
            state, rows = state[stay], rows[stay]
        if ctx is not None:
            ctx.progress(step + 1, max_new_tokens)
    if state.batch:  # max_new_tokens == 0, or every row left before the last step
        parts.append(state.replace(cache=None))
        order.append(rows)
    done = TokenState.cat(parts)
    return done[torch.argsort(torch.cat(order))]
