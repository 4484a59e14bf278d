"""lm.beam: beam search over token sequences, scored by their log-probability under the LM.

State: `width` slots per prompt (prompt-major rows); a slot holds a live beam (finite score) or nothing
(-inf). Each step evaluates the live beams in one batched call, ranks every one-token extension of a
prompt's beams (stable: ties by slot, then token id), sends EOS extensions ranked within the top `width`
to the prompt's finished pool and keeps the best `width` others as the next beams, gathered from their
parents (`state[idx]`: the model cache travels with them). A prompt stops when its pool holds `width`
texts none of its live beams can beat (scores only fall as tokens are added); at max_new_tokens the live
beams join the pool as unfinished texts."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from pydantic import Field, model_validator

from ..api import Node, node
from ..core.context import NodeContext
from .common import TokenBudget, start_rows
from .generations import Generations
from .model import LanguageModel
from .prompt import Prompts
from .state import TokenState


@dataclass
class Pool:
    """Finished or final texts of every prompt: states without cache, their scores and groups."""

    states: list[TokenState] = field(default_factory=list)
    scores: list[torch.Tensor] = field(default_factory=list)
    groups: list[torch.Tensor] = field(default_factory=list)

    def add(self, state: TokenState, score: torch.Tensor, group: torch.Tensor) -> None:
        if state.batch:
            self.states.append(state.replace(cache=None))
            self.scores.append(score.cpu())
            self.groups.append(group.cpu())

    def kth_best(self, groups: int, k: int) -> torch.Tensor:
        """(G,) the k-th best pooled score of each prompt (-inf where it has fewer than k)."""
        out = torch.full((groups,), -math.inf, dtype=torch.float64)
        if self.scores:
            score, group = torch.cat(self.scores), torch.cat(self.groups)
            for g in group.unique().tolist():
                s = score[group == g]
                if s.numel() >= k:
                    out[g] = torch.topk(s, k).values[-1]
        return out

    def best(self, per_group: int) -> tuple[TokenState, torch.Tensor, torch.Tensor]:
        """The per_group best pooled rows of each prompt, prompt-major, best first (ties: first pooled)."""
        state, score, group = TokenState.cat(self.states), torch.cat(self.scores), torch.cat(self.groups)
        order = torch.argsort(-score, stable=True)  # best first
        order = order[torch.argsort(group[order], stable=True)]  # then prompt-major, keeping that order
        rank = torch.arange(order.numel()) - torch.searchsorted(group[order], group[order])  # (N,) within group
        pick = order[rank < per_group]
        return state[pick.to(state.device)], score[pick], group[pick]


@node("lm.beam", version=1)
class Beam(Node):
    """Beam search (Lowerre 1976; as in Graves 2012, Sec. 3.2, without length normalisation): the most
    probable sequences the search finds; log_weight = each returned sequence's log-probability."""

    width: int = Field(4, ge=1, le=100_000, description="beams kept per prompt")
    max_new_tokens: int = Field(32, ge=1, le=1_000_000, description="most tokens generated per row")
    particles: int = Field(1, ge=1, le=100_000, description="sequences returned per prompt (<= width), best first")

    @model_validator(mode="after")
    def _fits(self) -> Beam:
        if self.particles > self.width:
            raise ValueError(f"particles ({self.particles}) cannot exceed width ({self.width}): beam search keeps "
                             f"only width sequences per prompt")
        return self

    def run(self, lm: LanguageModel, prompt: Prompts, ctx: NodeContext) -> Generations:
        state, group, groups = start_rows(lm, prompt, self.width, self.max_new_tokens, ctx.device)
        score = torch.full((state.batch,), -math.inf, dtype=torch.float64, device=state.device)  # (G W,)
        score[::self.width] = 0.0  # one beam per prompt to begin with
        budget, pool = TokenBudget(groups), Pool()
        for step in range(self.max_new_tokens):
            ctx.check_cancelled()
            live = torch.isfinite(score).nonzero()[:, 0]  # (L,)
            if live.numel() == 0:
                break
            logp, sub = budget.call(lm, state[live])
            state, score = self.advance(lm, state, score, group, live, logp[:, 0].to(torch.float64), sub, pool,
                                        budget)
            worst = pool.kth_best(groups, self.width).to(score.device)  # (G,)
            best_live = score.reshape(groups, self.width).amax(1)  # (G,)
            stop = (best_live <= worst)[group]  # (G W,) nothing live can enter the prompt's top width
            score = torch.where(stop, -math.inf, score)
            ctx.progress(step + 1, self.max_new_tokens)
        live = torch.isfinite(score).nonzero()[:, 0]
        pool.add(state[live], score[live], group[live])
        rows, top, g = pool.best(self.particles)
        first = torch.cat([torch.ones(1, dtype=torch.bool), g[1:] != g[:-1]])  # (N,) each prompt's best row
        ctx.record(**budget.report(), rows=rows.batch, best_logp_mean=float(top[first].mean()))
        return Generations.of(rows, lm.vocab, log_weight=top, group=g)

    def advance(self, lm: LanguageModel, state: TokenState, score: torch.Tensor, group: torch.Tensor,
                live: torch.Tensor, logp: torch.Tensor, sub: TokenState, pool: Pool,
                budget: TokenBudget) -> tuple[TokenState, torch.Tensor]:
        """The next beams and their scores from the live rows' next-token log-probs logp (L, V)."""
        w, v, dev = self.width, logp.shape[-1], state.device
        groups = state.batch // w
        cand = torch.full((state.batch, v), -math.inf, dtype=torch.float64, device=dev)  # (G W, V)
        cand[live] = score[live, None] + logp
        ranked, flat = torch.sort(cand.reshape(groups, w * v), dim=1, descending=True, stable=True)  # (G, W V)
        ranked, flat = ranked[:, :2 * w], flat[:, :2 * w]  # (G, K): enough for w non-EOS beams
        parent = torch.arange(groups, device=dev)[:, None] * w + flat // v  # (G, K) global row
        token = flat % v  # (G, K)
        real = torch.isfinite(ranked)
        eos = lm.vocab.is_eos(token) & real
        ends = eos & (torch.arange(ranked.shape[1], device=dev) < w)[None]  # EOS ranked within the top w
        keep = real & ~eos
        slot = keep.long().cumsum(1) - 1  # (G, K) the next-beam slot of each kept candidate
        keep = keep & (slot < w)
        pos = torch.zeros(state.batch, dtype=torch.long, device=dev)  # global row -> index in sub
        pos[live] = torch.arange(live.numel(), device=dev)
        bare = sub.replace(cache=None)
        gi, ki = ends.nonzero(as_tuple=True)
        pool.add(bare[pos[parent[gi, ki]]].append(token[gi, ki], logp=ranked[gi, ki] - score[parent[gi, ki]],
                                                  eos=torch.ones_like(ki, dtype=torch.bool)), ranked[gi, ki], gi)
        gk, kk = keep.nonzero(as_tuple=True)
        dest = gk * w + slot[gk, kk]  # (n,) next-beam rows
        src = torch.full((state.batch,), int(live[0]), dtype=torch.long, device=dev)  # empty slots: any live row
        nxt_token = torch.zeros(state.batch, dtype=torch.long, device=dev)
        nxt_score = torch.full((state.batch,), -math.inf, dtype=torch.float64, device=dev)
        src[dest], nxt_token[dest], nxt_score[dest] = parent[gk, kk], token[gk, kk], ranked[gk, kk]
        budget.count_tokens(torch.cat([gi, gk]), torch.ones(gi.numel() + gk.numel(), dtype=torch.bool))
        nxt = sub[pos[src]].append(nxt_token, logp=nxt_score - score[src])
        return nxt, nxt_score
