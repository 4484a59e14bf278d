"""lm.speculative: speculative sampling (Chen et al. 2023, "Accelerating Large Language Model Decoding with
Speculative Sampling", Alg. 2); the output strings follow the target LM's distribution exactly.

A round, per row: the draft LM proposes k_b tokens x_i ~ q (DRAFT slot); the target scores every prefix in
ONE call, next_logprobs(window=k+1); x_i is accepted while U_i <= p(x_i) / q(x_i) (ACCEPT slot); at the
first rejection one token is drawn from normalise(max(p - q, 0)) (RESIDUAL slot), and if all k_b pass one
bonus token from p (BONUS slot). Rows are cut back to what they kept (TokenState.truncate, each model's
cache with them). k_b = min(k, tokens left - 1), per row, so a row's noise and output never depend on the
other rows of its batch. Rows that finish leave the batch (their caches are gathered away)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..core.noise import NoiseSource
from .common import TokenBudget, start_rows
from .draws import ACCEPT, BONUS, DRAFT, RESIDUAL, categorical, uniform
from .generations import Generations
from .model import LanguageModel, normalise
from .prompt import Prompts
from .state import ModelCache, TokenState


@dataclass(frozen=True)
class Memory:
    """One model's cache of the live rows and how many tokens of each it covers (B,)."""

    cache: ModelCache | None
    cached: torch.Tensor  # (B,) int64

    def select(self, idx: torch.Tensor) -> Memory:
        return Memory(None if self.cache is None else self.cache.select(idx), self.cached[idx])

    def cut(self, length: torch.Tensor) -> Memory:
        return Memory(self.cache, torch.minimum(self.cached, length))


@dataclass
class Counts:
    """Speculative bookkeeping: rounds, drafted and accepted tokens, calls of each model."""

    rounds: int = 0
    proposed: int = 0
    accepted: int = 0
    draft_calls: int = 0
    target_calls: int = 0

    def report(self) -> dict[str, Any]:
        rate = self.accepted / self.proposed if self.proposed else None
        return {"rounds": self.rounds, "draft_tokens_proposed": self.proposed, "draft_tokens_accepted": self.accepted,
                "acceptance_rate": rate, "draft_calls": self.draft_calls, "target_calls": self.target_calls}


def call(lm: LanguageModel, state: TokenState, memory: Memory, window: int,
         budget: TokenBudget) -> tuple[torch.Tensor, Memory]:
    """lm.next_logprobs (B, W, V) on the state carrying this model's cache; the cache it leaves."""
    logp, out = budget.call(lm, state.replace(cache=memory.cache, cached=memory.cached), window)
    return logp, Memory(out.cache, out.cached)


def propose(draft: LanguageModel, state: TokenState, memory: Memory, steps: int, noise: NoiseSource,
            budget: TokenBudget) -> tuple[TokenState, torch.Tensor, Memory]:
    """Append `steps` draft tokens to every row; their draft log-probs q (B, steps, V)."""
    qs = []
    for _ in range(steps):
        q, memory = call(draft, state, memory, 1, budget)  # (B, 1, V)
        x = categorical(noise, q[:, 0], state.particle, state.position, slot=DRAFT)  # (B,)
        qs.append(q[:, 0].to(torch.float64))
        state = state.append(x)
    v = draft.vocab.size
    return state, torch.stack(qs, 1) if qs else torch.zeros(state.batch, 0, v, dtype=torch.float64), memory


def accepted_count(p: torch.Tensor, q: torch.Tensor, drafted: torch.Tensor, start: torch.Tensor,
                   kb: torch.Tensor, state: TokenState, noise: NoiseSource) -> torch.Tensor:
    """(B,) how many leading draft tokens pass U_i <= p(x_i) / q(x_i), at most kb (B,)."""
    steps = drafted.shape[1]
    i = torch.arange(steps, device=start.device)  # (k,)
    lp = p[:, :steps].gather(2, drafted[..., None])[..., 0]  # (B, k)
    lq = q.gather(2, drafted[..., None])[..., 0]  # (B, k)
    u = torch.stack([uniform(noise, state.particle, start + j, 1, slot=ACCEPT)[:, 0] for j in range(steps)], 1) \
        if steps else lp.new_zeros(state.batch, 0)  # (B, k)
    ok = (torch.log(u) <= lp - lq) & (i[None] < kb[:, None])  # (B, k)
    return ok.long().cumprod(1).sum(1)  # (B,)


def correction(p: torch.Tensor, q: torch.Tensor, a: torch.Tensor, kb: torch.Tensor, state: TokenState,
               start: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
    """(B,) the token after the a accepted ones: from normalise(max(p - q, 0)) at a rejection (a < kb),
    else the bonus token from p after all kb."""
    rows = torch.arange(state.batch, device=a.device)
    pa = p[rows, a]  # (B, V) target after the accepted prefix
    qa = q[rows, a.clamp(max=max(q.shape[1] - 1, 0))] if q.shape[1] else torch.full_like(pa, -torch.inf)
    rest = torch.log((pa.exp() - qa.exp()).clamp(min=0))  # (B, V) unnormalised residual
    rest = torch.where(torch.isfinite(rest).any(-1, keepdim=True), normalise(rest), pa)  # p == q: never rejected
    residual = categorical(noise, rest, state.particle, start + a, slot=RESIDUAL)
    bonus = categorical(noise, pa, state.particle, start + kb, slot=BONUS)
    return torch.where(a < kb, residual, bonus)


def first_true(mask: torch.Tensor) -> torch.Tensor:
    """(B,) the index of each row's first True in mask (B, k); k where there is none."""
    k = mask.shape[1]
    if k == 0:
        return torch.zeros(mask.shape[0], dtype=torch.long, device=mask.device)
    return torch.where(mask, torch.arange(k, device=mask.device)[None], k).amin(1)


def speculative_round(target: LanguageModel, draft: LanguageModel, state: TokenState, memories: tuple[Memory, Memory],
                      k: int, max_new_tokens: int, noise: NoiseSource, budget: TokenBudget,
                      counts: Counts) -> tuple[TokenState, tuple[Memory, Memory]]:
    """One draft-verify round over live rows: each keeps its accepted draft tokens plus one target token."""
    tmem, dmem = memories
    start, left = state.length, max_new_tokens - state.generated_length  # (B,), (B,) >= 1
    kb = torch.clamp(torch.minimum(torch.full_like(left, k), left - 1), min=0)  # (B,) tokens drafted per row
    steps = int(kb.max())
    drafted_state, q, dmem = propose(draft, state, dmem, steps, noise, budget)
    drafted_state = drafted_state.replace(done=state.done)  # a draft that hit capacity is cut back anyway
    p, tmem = call(target, drafted_state, tmem, steps + 1, budget)  # (B, k+1, V) after prefixes start..start+k
    p = p.to(torch.float64)
    drafted = drafted_state.tokens.gather(1, start[:, None] + torch.arange(steps, device=start.device)[None])
    a = accepted_count(p, q, drafted, start, kb, state, noise)  # (B,)
    first_eos = first_true(draft.vocab.is_eos(drafted))  # (B,)
    ended = first_eos < a
    a = torch.where(ended, first_eos + 1, a)  # an accepted EOS ends the row
    c = correction(p, q, a.clamp(max=max(steps, 0)), kb, state, start, noise)
    keep = drafted_state.truncate(start + a).replace(done=ended)
    kept = torch.arange(steps, device=a.device)[None] < a[:, None]  # (B, k)
    lp_kept = torch.where(kept, p[:, :steps].gather(2, drafted[..., None])[..., 0], 0.0).sum(1)  # (B,)
    lp_c = torch.where(ended, 0.0, p[torch.arange(state.batch), a.clamp(max=steps)].gather(1, c[:, None])[:, 0])
    out = keep.append(c, logp=lp_c, eos=target.vocab.is_eos(c))
    out = out.replace(logp=out.logp + lp_kept, done=out.done | (out.generated_length >= max_new_tokens))
    counts.rounds += 1
    counts.proposed += int(torch.where(ended, a, kb).sum())  # drafts after an accepted EOS are moot
    counts.accepted += int(torch.minimum(a, kb).sum())
    counts.draft_calls += steps
    counts.target_calls += 1
    return out, (tmem.cut(start + a), dmem.cut(start + a))


def speculate(target: LanguageModel, draft: LanguageModel, state: TokenState, k: int, max_new_tokens: int,
              noise: NoiseSource, budget: TokenBudget, counts: Counts, group: torch.Tensor,
              ctx: NodeContext | None = None) -> TokenState:
    """Rounds until every row ends (EOS or max_new_tokens); finished rows leave the batch. Returns all rows."""
    rows = torch.arange(state.batch, device=state.device)  # live rows' indices in the input batch
    empty = Memory(None, torch.zeros_like(state.length))
    memories, finished = (empty, empty), []
    state = state.replace(cache=None, cached=torch.zeros_like(state.length))
    while state.batch:
        if ctx is not None:
            ctx.check_cancelled()
        before = state.length
        state, memories = speculative_round(target, draft, state, memories, k, max_new_tokens, noise, budget, counts)
        budget.tokens += torch.bincount(group[rows].cpu(), weights=(state.length - before).cpu().double(),
                                        minlength=budget.groups).long()
        if ctx is not None:
            ctx.progress(int(state.generated_length.max()), max_new_tokens)
        if bool(state.done.any()):
            done, keep = state.done.nonzero()[:, 0], (~state.done).nonzero()[:, 0]  # TokenState takes ids, not masks
            finished.append((rows[done], state[done]))
            rows, state, memories = rows[keep], state[keep], tuple(m.select(keep) for m in memories)
    order = torch.cat([r for r, _ in finished])
    return TokenState.cat([s for _, s in finished])[torch.argsort(order)]


@node("lm.speculative", version=1)
class Speculative(Node):
    """Implements speculative sampling (Chen et al. 2023, Alg. 2): draft k tokens, verify them in one target call."""

    uses_seed: ClassVar[bool] = True
    k: int = Field(4, ge=1, le=64, description="tokens the draft LM proposes per round (the target verifies "
                   "them with next_logprobs(window=k+1))")
    max_new_tokens: int = Field(32, ge=1, description="tokens generated per row at most")
    particles: int = Field(1, ge=1, description="rows per prompt")

    def run(self, target: LanguageModel, draft: LanguageModel, prompt: Prompts, ctx: NodeContext) -> Generations:
        """Texts distributed exactly as the target LM's, one row per particle."""
        if draft.vocab.tokens != target.vocab.tokens:
            raise NodeError("input 'draft': its vocabulary differs from the target's; speculative sampling needs "
                            "both LMs to share one tokenizer")
        state, group, groups = start_rows(target, prompt, self.particles, self.max_new_tokens, ctx.device)
        context = min(target.max_length, draft.max_length)
        if state.capacity + self.k > context:
            raise NodeError(f"a prompt of {state.capacity - self.max_new_tokens} tokens plus max_new_tokens="
                            f"{self.max_new_tokens} plus k={self.k} drafted tokens exceeds the context of "
                            f"{context} tokens; shorten the prompt or lower max_new_tokens or k")
        state = state.replace(tokens=F.pad(state.tokens, (0, self.k)))  # room for the last round's drafts
        budget, counts = TokenBudget(groups), Counts()
        out = speculate(target, draft, state, self.k, self.max_new_tokens, ctx.noise, budget, counts, group, ctx)
        report = budget.report()
        ctx.record(**report, **counts.report(),
                   tokens_per_target_call=report["tokens_generated"] / max(counts.target_calls, 1))
        return Generations.of(out, target.vocab, group=group)
