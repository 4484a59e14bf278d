"""AWRS: adaptive weighted rejection sampling (Lipkin et al. 2025, "Fast Controlled Generation from Language
Models with Adaptive Weighted Rejection Sampling"): the kernel `awrs_draw`, the one-token extension `extend`
that lm.awrs and lm.smc share, and the node lm.awrs.

`awrs_draw` tests each row's candidates in Gumbel-key order (nodes/lm/awrs_walk.py), one batched
`candidates` call per round holding every walking row's next candidate, until the first accept: an exact
draw from p(t) 1[c(t)] / Z_local. Its weight is an unbiased estimate of Z_local: the recursive estimator, or
the geometric one; `auto` picks per row as genlm-control does (geometric when max_accepts > 2 or the top
token has p >= 2/3, where the geometric walk needs fewer tests). Both walks share the first key order, so the
token drawn does not depend on the estimator."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..core.noise import NoiseSource
from .awrs_walk import GeometricWalk, RecursiveWalk
from .common import TokenBudget, start_rows
from .draws import categorical, gumbel
from .generations import Generations
from .model import LanguageModel
from .potential import CountingPotential, Evaluations, Potential, TokenPotential
from .prompt import Prompts
from .state import PAD, TokenState

Estimator = Literal["auto", "recursive", "geometric"]
Proposal = Literal["awrs", "ancestral"]
GEOMETRIC_TOP = math.log(2 / 3)  # top log-probability from which `auto` takes the geometric walk


@dataclass(frozen=True)
class AwrsDraw:
    """One AWRS draw per row: the token (-1 when every token was rejected), log Z-hat (-inf then), the
    potential's log-weight of the row extended by the token, and the candidates tested per row."""

    token: torch.Tensor  # (L,) int64
    log_z: torch.Tensor  # (L,) float64 unbiased estimate of the local normaliser, in logs
    value: torch.Tensor  # (L,) float64
    accepted: torch.Tensor  # (L,) int64 candidates tested and valid
    rejected: torch.Tensor  # (L,) int64 candidates tested and invalid
    geometric: torch.Tensor  # (L,) bool: the geometric estimator served the row


def awrs_draw(potential: TokenPotential, state: TokenState, rows: torch.Tensor, logp: torch.Tensor,
              noise: NoiseSource, estimator: Estimator = "auto", max_accepts: int = 2) -> AwrsDraw:
    """Implements AWRS (Lipkin et al. 2025) for rows (L,) of state with next-token log-probs logp (L, V)."""
    logp = logp.to(torch.float64)
    particle, position = state.particle[rows].to(logp.device), state.position[rows].to(logp.device)
    geo = geometric_rows(logp, estimator, max_accepts)  # (L,)
    walks = []
    if bool((~geo).any()):
        r = (~geo).nonzero().flatten()
        keys = logp[r] + gumbel(noise, particle[r], position[r], logp.shape[1])  # (n, V)
        walks.append((r, RecursiveWalk(logp[r], keys)))
    if bool(geo.any()):
        g = geo.nonzero().flatten()
        walks.append((g, GeometricWalk(logp[g], noise, particle[g], position[g], max_accepts)))
    while True:
        asks = [(idx, walk, *walk.pending()) for idx, walk in walks if not bool(walk.done.all())]
        if not asks:
            break
        who = torch.cat([rows[idx[local].to(rows.device)] for idx, _, local, _ in asks])  # (n,) rows of state
        tokens = torch.cat([tok for *_, tok in asks])  # (n,)
        values = potential.candidates(state, who, tokens.to(state.device)).to(logp.device, torch.float64)
        for (_, walk, local, _), part in zip(asks, values.split([a[2].numel() for a in asks])):
            walk.observe(local, part)
    out = {f: torch.empty(logp.shape[0], dtype=t, device=logp.device) for f, t in
           (("token", torch.long), ("log_z", torch.float64), ("value", torch.float64),
            ("accepted", torch.long), ("rejected", torch.long))}
    for idx, walk in walks:
        for f, t in out.items():
            t[idx] = getattr(walk, f)
    return AwrsDraw(**out, geometric=geo)


def geometric_rows(logp: torch.Tensor, estimator: Estimator, max_accepts: int) -> torch.Tensor:
    """(L,) bool: rows the geometric estimator serves (`auto`: max_accepts > 2 or top p >= 2/3)."""
    if estimator != "auto":
        return torch.full(logp.shape[:1], estimator == "geometric", dtype=torch.bool, device=logp.device)
    top = (logp.amax(-1) - torch.logsumexp(logp, -1))  # (L,)
    return (top >= GEOMETRIC_TOP) | (max_accepts > 2)


@dataclass
class ProposalStats:
    """AWRS's accepted / rejected candidate tests, rows that died, geometric draws, and EOS tests at the budget."""

    accepted: int = 0
    rejected: int = 0
    dead: int = 0
    geometric_draws: int = 0
    draws: int = 0
    forced_eos: int = 0

    def report(self) -> dict[str, float | int | None]:
        tested = self.accepted + self.rejected
        return {"accepted": self.accepted, "rejected": self.rejected, "dead_rows": self.dead,
                "acceptance_rate": round(self.accepted / tested, 6) if tested else None,
                "evaluations_per_token": round(tested / self.draws, 6) if self.draws else None,
                "geometric_draws": self.geometric_draws, "forced_eos": self.forced_eos}


def extend(potential: TokenPotential, state: TokenState, logp: torch.Tensor, last: torch.Tensor,
           noise: NoiseSource, proposal: Proposal, at_budget: bool, stats: ProposalStats,
           estimator: Estimator = "auto", max_accepts: int = 2
           ) -> tuple[TokenState, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token for every live row from the proposal (AWRS, or ancestral from p), given logp (B, V) and the
    potential's log-weight `last` (B,) of each row's text. At the budget EOS is forced, weighted by its
    probability, so weights target p(x) c(x) among texts of at most max_new_tokens tokens (genlm-control's
    convention). Returns the state, the log-weight increments (B,) (0 for rows already done, -inf for rows
    that died: they are marked done, nothing appended), the new `last` (B,) and the rows extended (B,) bool."""
    live = (~state.done).nonzero().flatten()  # (L,)
    lp = logp[live].to(torch.float64)  # (L, V)
    if at_budget:
        token, log_q = forced_eos(potential, lp)
        value = potential.candidates(state, live, token.to(state.device)).to(lp.device, torch.float64)
        log_inc = log_q + value
        stats.forced_eos += live.numel()
    elif proposal == "awrs":
        d = awrs_draw(potential, state, live, lp, noise, estimator, max_accepts)
        token, value, log_inc = d.token, d.value, d.log_z + d.value
        stats.accepted += int(d.accepted.sum())
        stats.rejected += int(d.rejected.sum())
        stats.geometric_draws += int(d.geometric.sum())
        stats.draws += live.numel()
    else:
        token = categorical(noise, lp, state.particle[live].to(lp.device), state.position[live].to(lp.device))
        value = potential.candidates(state, live, token.to(state.device)).to(lp.device, torch.float64)
        log_inc = value
    log_inc = (log_inc - last[live].to(lp.device)).cpu()  # (L,)
    inc = torch.zeros(state.batch, dtype=torch.float64)
    inc[live] = log_inc
    ok = torch.isfinite(log_inc)
    stats.dead += int((~ok).sum())
    dead = torch.zeros(state.batch, dtype=torch.bool)
    dead[live[~ok].cpu()] = True
    full = torch.full((state.batch,), PAD, dtype=torch.long)
    full[live.cpu()] = torch.where(ok, token.cpu(), PAD)
    chosen = torch.zeros(state.batch, dtype=torch.float64)
    chosen[live.cpu()] = torch.where(ok, lp.gather(1, token.clamp(min=0)[:, None])[:, 0].cpu(), 0.0)
    new_last = last.clone()
    new_last[live.cpu()] = value.cpu()
    state = state.replace(done=state.done | dead.to(state.device))
    extended = ~state.done
    full = full.to(state.device)
    state = state.append(full, logp=chosen.to(state.device), eos=potential.vocab.is_eos(full))
    return state, inc, new_last, extended.cpu()


def forced_eos(potential: TokenPotential, logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The most probable EOS id (L,) of each row and the log mass (L,) of all EOS ids (they end the same text)."""
    eos = torch.tensor(sorted(potential.vocab.eos), dtype=torch.long, device=logp.device)
    mass = logp[:, eos]  # (L, E)
    return eos[mass.argmax(-1)], torch.logsumexp(mass, -1)


def start_weights(potential: TokenPotential, state: TokenState) -> torch.Tensor:
    """(B,) log-weight of the empty generated text; a NodeError when the potential rejects it."""
    last = potential.prefix_of(state).to(torch.float64).cpu()
    if not bool(torch.isfinite(last).any()):
        raise NodeError("the constraint rejects the empty text: no text can satisfy it; check the constraint "
                        "(e.g. its pattern) against what the prompt should be continued with")
    return last


def check_first_step(died: torch.Tensor, at_budget: bool) -> None:
    """NodeError when every row died at the first token under AWRS or forced EOS (both exhaustive, so the
    constraint cannot be satisfied at all; ancestral rows can all die by chance and are not checked)."""
    if bool(died.all()):
        what = "EOS (max_new_tokens=1 forces it)" if at_budget else "every token"
        raise NodeError(f"the constraint rejects {what} at the first step for every row: it cannot be satisfied "
                        f"from the prompt; check the constraint, or raise max_new_tokens")


@node("lm.awrs", version=1)
class Awrs(Node):
    """Implements AWRS (Lipkin et al. 2025): exact locally constrained draws, weighted by unbiased estimates of
    each local normaliser, so each row's log-weight (sum of log Z-hat) is an importance weight for p(x) c(x)."""

    uses_seed: ClassVar[bool] = True
    particles: int = Field(1, ge=1, description="rows per prompt (independent, weighted)")
    max_new_tokens: int = Field(32, ge=1, description="tokens per row at most, EOS included (forced at the end)")
    estimator: Estimator = Field("auto", description="Z-hat: recursive, geometric, or per row as genlm-control")
    max_accepts: int = Field(2, ge=2, description="accepts the geometric estimator waits for (more: lower variance)")

    def run(self, lm: LanguageModel, prompt: Prompts, constraint: Potential, ctx: NodeContext) -> Generations:
        """One constrained text per row with its log importance weight."""
        state, group, groups = start_rows(lm, prompt, self.particles, self.max_new_tokens, ctx.device)
        return self.generate(lm, state, group, groups, constraint, ctx)

    def generate(self, lm: LanguageModel, state: TokenState, group: torch.Tensor, groups: int,
                 constraint: Potential, ctx: NodeContext) -> Generations:
        """AWRS from a started state (rows keep their particle ids: the same draws whatever the batch)."""
        evaluations, budget, stats = Evaluations(), TokenBudget(groups), ProposalStats()
        potential = CountingPotential(constraint.bind(lm.vocab), evaluations)
        last = start_weights(potential, state)
        log_w = last.clone()  # (B,)
        for i in range(self.max_new_tokens):
            ctx.check_cancelled()
            if bool(state.done.all()):
                break
            logp, state = budget.call(lm, state)  # (B, 1, V)
            live = ~state.done.cpu()
            at_budget = i == self.max_new_tokens - 1
            state, inc, last, extended = extend(potential, state, logp[:, 0], last, ctx.noise, "awrs", at_budget,
                                                stats, self.estimator, self.max_accepts)
            if i == 0:
                check_first_step(live & ~extended, at_budget)
            budget.count_tokens(group, extended)
            log_w += inc
            ctx.progress(i + 1, self.max_new_tokens)
        ctx.record(**budget.report(), **evaluations.report(), **stats.report(),
                   log_weight_mean=float(log_w[torch.isfinite(log_w)].mean()) if bool(torch.isfinite(log_w).any())
                   else None, finished=int(state.done.sum()))
        return Generations.of(state, lm.vocab, log_weight=log_w, group=group)
