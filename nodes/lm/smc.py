"""lm.smc: sequential Monte Carlo over tokens (Lew et al. 2023, "Sequential Monte Carlo Steering of Large
Language Models using Probabilistic Programs"; Loula et al. 2025, "Syntactic and Semantic Control of Large
Language Models via Sequential Monte Carlo") with AWRS or ancestral proposals.

State: Particles (nodes/search/particles.py) over a TokenState, with float64 log-weights accumulated since
the last resampling, plus per row the constraint's log-weight of its text (`last`) and the twist's (`tw`).
Each token step extends every live row (nodes/lm/awrs.py `extend`), multiplies its weight by the proposal's
increment (AWRS: Z-hat; ancestral: the constraint's ratio) and by the twist's ratio psi(x t) / psi(x), then
resamples the groups whose ESS fell below ess_threshold x N (within groups; weights reset to logsumexp - log N).
A finished row's twist is taken back out (or replaced by psi's complete weight when twist_in_target), so
the final weights target the global p(x) c(x) / Z (times psi(x) when twist_in_target) over texts of at most
max_new_tokens tokens; log Z-hat per group is the log-mean-exp of the final weights (unbiased in Z)."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import ClassVar, Literal

import torch
from pydantic import Field

from ..api import Node, node
from ..core.context import NodeContext
from ..search.particles import Particles
from ..search.resample import METHODS, Method, Trigger, resample, resample_generator
from .awrs import Estimator, Proposal, ProposalStats, check_first_step, extend, start_weights
from .common import TokenBudget, start_rows
from .generations import Generations
from .model import LanguageModel
from .potential import CountingPotential, Evaluations, Potential, TokenPotential
from .prompt import Prompts
from .state import TokenState

FINAL_STEP = -3  # resampling-generator key of the optional final resampling, distinct from every token step


class Twist:
    """A guiding potential psi over texts: prefix ratios while a row runs, taken back out when it finishes."""

    def __init__(self, potential: TokenPotential, in_target: bool):
        self.potential, self.in_target = potential, in_target
        self.evaluations = 0  # texts scored

    def texts(self, state: TokenState, rows: torch.Tensor) -> list[bytes]:
        self.evaluations += rows.numel()
        return [self.potential.vocab.decode(state.generated(int(i))) for i in rows]

    def start(self, state: TokenState) -> torch.Tensor:
        """(B,) log psi of the empty generated texts."""
        return self.potential.prefix_texts(self.texts(state, torch.arange(state.batch))).to(torch.float64).cpu()

    def step(self, state: TokenState, extended: torch.Tensor, tw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-weight increments (B,) and the new psi (B,) of the rows extended (B,) bool this step."""
        inc, tw = torch.zeros_like(tw), tw.clone()
        ended = extended & state.done.cpu()  # (B,) finished by this token (EOS, or the budget)
        going = (extended & ~ended).nonzero().flatten()
        if going.numel():
            now = self.potential.prefix_texts(self.texts(state, going)).to(torch.float64).cpu()
            inc[going], tw[going] = now - tw[going], now
        fin = ended.nonzero().flatten()
        if fin.numel():
            end = (self.potential.complete_texts(self.texts(state, fin)).to(torch.float64).cpu()
                   if self.in_target else torch.zeros(fin.numel(), dtype=torch.float64))
            inc[fin], tw[fin] = end - tw[fin], 0.0
        return inc, tw


def alive_ess(p: Particles) -> torch.Tensor:
    """ESS per group (G,); 0 for groups whose particles all died (weights all -inf)."""
    alive = torch.isfinite(p.log_norm())
    return torch.where(alive, p.ess(), torch.zeros_like(alive, dtype=torch.float64))


def resample_alive(p: Particles, method: Method, generator: torch.Generator, step: int, due: torch.Tensor,
                   extra: tuple[torch.Tensor, ...]) -> tuple[Particles, tuple[torch.Tensor, ...]]:
    """nodes/search/resample.py `resample` of the due groups (G,); groups whose rows all died (weights -inf)
    are never due, so their rows stay in place, and their NaN-free stand-in weights are put back to -inf."""
    alive = torch.isfinite(p.log_norm())  # (G,)
    dead = ~alive[p.group]  # (B,)
    masked = replace(p, log_w=torch.where(dead, torch.zeros_like(p.log_w), p.log_w))
    out, extra = resample(masked, method, generator, step, due & alive, extra)
    return replace(out, log_w=torch.where(dead, -math.inf, out.log_w)), extra


@node("lm.smc", version=1)
class TokenSmc(Node):
    """Implements SMC over tokens (Loula et al. 2025) with AWRS (Lipkin et al. 2025) or ancestral proposals and
    twists; ESS-triggered resampling within prompts; final weights target the global p(x) c(x) / Z."""

    uses_seed: ClassVar[bool] = True
    particles: int = Field(8, ge=1, description="particles per prompt")
    max_new_tokens: int = Field(32, ge=1, description="tokens per particle at most, EOS included (forced at the end)")
    proposal: Proposal = Field("awrs", description="awrs: exact locally constrained draws weighted by Z-hat; "
                                                   "ancestral: draws from the LM weighted by the constraint")
    ess_threshold: float = Field(0.5, ge=0, le=1, description="resample a prompt's particles when ESS < this x N")
    resampler: Method = Field("multinomial", description=f"resampling scheme, one of {METHODS} (within prompts)")
    twist_in_target: bool = Field(False, description="keep the twist's complete weight in the target "
                                                     "(p c psi, genlm-control's critic) instead of taking it out")
    output: Literal["weighted", "resampled"] = Field("weighted", description="weighted: every particle with its "
                                                     "log-weight; resampled: a final resampling (equal weights)")
    estimator: Estimator = Field("auto", description="AWRS Z-hat: recursive, geometric, or per row as genlm-control")
    max_accepts: int = Field(2, ge=2, description="accepts the geometric AWRS estimator waits for")

    def run(self, lm: LanguageModel, prompts: Prompts, constraint: Potential, ctx: NodeContext,
            twist: Potential | None = None) -> Generations:
        """Weighted particles per prompt (or resampled ones), with log Z-hat and ESS in the run report."""
        state, group, groups = start_rows(lm, prompts, self.particles, self.max_new_tokens, ctx.device)
        gen, _ = self.steer(lm, state, group.cpu(), groups, constraint, ctx, twist)
        return gen

    def steer(self, lm: LanguageModel, state: TokenState, group: torch.Tensor, groups: int, constraint: Potential,
              ctx: NodeContext, twist: Potential | None = None) -> tuple[Generations, torch.Tensor]:
        """The generations and log Z-hat (G,) per group."""
        evaluations = Evaluations()
        budget, stats = TokenBudget(groups), ProposalStats()
        potential = CountingPotential(constraint.bind(lm.vocab), evaluations)
        last = start_weights(potential, state)  # (B,)
        guide = None if twist is None else Twist(twist.bind(lm.vocab), self.twist_in_target)
        tw = torch.zeros_like(last) if guide is None else guide.start(state)  # (B,)
        p = Particles.start(state, group, groups).reweight(last + tw)
        trigger, seed = Trigger(self.ess_threshold), ctx.noise.seed
        ess_steps, resamplings = [], 0
        for k in range(self.max_new_tokens):
            ctx.check_cancelled()
            if bool(p.state.done.all()):
                break
            logp, st = budget.call(lm, p.state)  # (B, 1, V)
            live, at_budget = ~st.done.cpu(), k == self.max_new_tokens - 1
            st, inc, last, extended = extend(potential, st, logp[:, 0], last, ctx.noise, self.proposal, at_budget,
                                             stats, self.estimator, self.max_accepts)
            if k == 0:
                check_first_step(live & ~extended, at_budget)
            budget.count_tokens(group, extended)
            if guide is not None:
                inc_tw, tw = guide.step(st, extended, tw)
                inc = inc + inc_tw
            p = p.with_state(st).reweight(inc.to(p.log_w.device))
            p = p.with_state(p.state.replace(done=p.state.done | ~torch.isfinite(p.log_w).to(st.device)))  # psi = 0
            ess = alive_ess(p)  # (G,)
            ess_steps.append(ess)
            due = trigger.groups_due(p, k, 0.0) & (ess > 0)  # (G,)
            resamplings += int(due.sum())
            dev = p.log_w.device
            p, (last, tw) = resample_alive(p, self.resampler, resample_generator(seed, k), k, due,
                                           (last.to(dev), tw.to(dev)))
            last, tw, group = last.cpu(), tw.cpu(), p.group.cpu()
            ctx.progress(k + 1, self.max_new_tokens)
        log_z = p.log_norm() - torch.log(p.sizes().to(torch.float64))  # (G,) log-mean-exp of the final weights
        if self.output == "resampled":
            p = resample_alive(p, self.resampler, resample_generator(seed, FINAL_STEP), FINAL_STEP,
                               torch.ones(groups, dtype=torch.bool), ())[0]
        self.report(ctx, budget, evaluations, guide, stats, ess_steps, resamplings, log_z, p)
        return Generations.of(p.state, lm.vocab, log_weight=p.log_w, group=p.group), log_z

    def report(self, ctx: NodeContext, budget: TokenBudget, evaluations: Evaluations, guide: Twist | None,
               stats: ProposalStats, ess_steps: list[torch.Tensor], resamplings: int, log_z: torch.Tensor,
               p: Particles) -> None:
        """The run report: budget, evaluations, acceptance, ESS per step (mean / min over prompts), log Z-hat."""
        ess = torch.stack(ess_steps) if ess_steps else torch.zeros(1, p.groups, dtype=torch.float64)  # (K, G)
        twist = {} if guide is None else {"twist_evaluations": guide.evaluations}
        ctx.record(**budget.report(), **evaluations.report(), **stats.report(), **twist,
                   resamplings=resamplings, ess_mean=float(ess.mean()), ess_min=float(ess.min()),
                   ess_per_step=[round(float(e), 4) for e in ess.mean(1)],
                   log_z=[float(z) for z in log_z], log_z_mean=float(log_z.mean()), finished=int(p.state.done.sum()))
