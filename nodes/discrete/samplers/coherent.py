"""discrete_sampler.coherent: Coherent Contextual Decoding (CCD) and its adaptive budget CCD-DS (Chen et al.
2025, "Beyond Confidence: Adaptive and Coherent Decoding for Diffusion Language Models", arXiv 2512.02044).

CCD ranks the masked positions by the entropy (or confidence, margin) of p_bar = (1/d) sum_j p(x0 | x_{t_j}),
the model's predictions at the last d steps averaged: the contexts of recent steps marginalised out. Its
entropy is the mean entropy plus the context / token mutual information (the Jensen-Shannon spread of the
d predictions), so a position whose prediction is confident but unstable across contexts ranks low
(trajectory rectification). `consistency` adds the authors' code's check (model.py, their
`_sample_inference_lookahead`): after `warmup` steps a masked position passes when it is among the top-w
positions now, was among the top-w of the positions left undecided at the previous step, and its argmax
token is the same at both; w grows by one per step from 1 to k + floor(k expand_ratio) (k: the step's
scheduled count), and is min(2, that) once 10% of the holes or fewer are left. "rectify" (their uniform
mode) decodes the k best-ranked passing positions when at least k pass; "adaptive" (CCD-DS, their
seek mode) decodes every passing position; either falls back to the plain top k when fewer than k pass or
none of the plain top k passed the previous step's set, and a row finishes when nothing is masked.

Departures from the authors' code: the ranking uses p_bar (their code ranks by the current step's entropy;
history = 1 is exactly that); tokens are drawn from the current p(x0 | x_t)^(1/T) with the project's
counter-based float64 Gumbel-max (their x0), or from p_bar with token_from="average"; k per step follows the
mask schedule (theirs: int(L / steps) every step).

`block_length` adds LLaDA's semi-autoregressive blocks (Nie et al. 2025; their code decodes the whole row): the
steps split evenly over blocks decoded left to right, as discrete_sampler.confidence does, with k, the window
and the check's warm-up counted within the block; a block that CCD-DS finishes early hands its remaining steps
on: the row jumps to the next block's first step (so the saved denoiser calls stay saved)."""
from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field

from ...api import node
from ...core.noise import NoiseSource
from ...lm.model import normalise
from ..denoiser import DiscreteDenoiser
from ..draws import TOKEN, categorical
from ..sampler import DiscreteSampler
from ..schedule import MaskSchedule
from ..state import DiscreteState
from .parallel import block_plan, block_window, decode_counts, position_scores, top_k_positions
from .unmasking import next_times

LATE_FRACTION = 0.1  # the authors' late stage: at most this fraction of the holes still masked


def averaged(buffer: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """(B, L, V) log p_bar: the mean of the first filled (B,) >= 1 of the buffered log-probs (B, d, L, V)."""
    d = buffer.shape[1]
    used = torch.arange(d, device=buffer.device)[None, :] < filled[:, None]  # (B, d)
    logs = torch.where(used[:, :, None, None], buffer, torch.full_like(buffer, -math.inf))
    return torch.logsumexp(logs, 1) - torch.log(filled.to(torch.float64))[:, None, None]


def window(step: torch.Tensor, k: torch.Tensor, masked: torch.Tensor, holes: torch.Tensor, warmup: int,
           expand_ratio: float) -> torch.Tensor:
    """(B,) the authors' verification width at 0-based step (B,): 1 through step warmup - 2, then one more per
    step up to k + floor(k expand_ratio), min(2, that) in the late stage (masked (B,) <= 10% of holes (B,))."""
    top = k + torch.floor(k.to(torch.float64) * expand_ratio).long()  # (B,)
    grown = torch.minimum(torch.clamp(step - warmup + 3, min=1), top)
    late = masked.to(torch.float64) <= LATE_FRACTION * holes.to(torch.float64)
    w = torch.where(late, torch.minimum(torch.full_like(top, 2), top), grown)
    return torch.where(step < warmup - 1, torch.ones_like(w), w)


@node("discrete_sampler.coherent", version=1)
class Coherent(DiscreteSampler):
    """Implements CCD / CCD-DS (Chen et al. 2025, arXiv 2512.02044): rank by predictions averaged over recent steps."""

    history: int = Field(2, ge=1, le=64, description="d: how many recent steps' predictions are averaged into "
                         "p_bar (the current one included); 1 = the current prediction only")
    score: Literal["entropy", "confidence", "margin"] = Field(
        "entropy", description="ranking of masked positions on p_bar: lowest entropy (the authors' choice), "
        "highest p_bar(drawn token), or largest top-1 minus top-2")
    consistency: Literal["off", "rectify", "adaptive"] = Field(
        "adaptive", description="the authors' cross-step check: off; rectify = decode the k best passing positions "
        "(their uniform mode); adaptive = CCD-DS, decode every passing position (their seek mode)")
    expand_ratio: float = Field(4.0, ge=0, le=1000, description="the check's widest window is k + floor(k * "
                                "expand_ratio) positions (the authors' buffer size, default 4)")
    warmup: int = Field(5, ge=2, le=100_000, description="steps of plain top-k decoding before the check starts "
                        "(the authors' warm_up_steps)")
    temperature: float = Field(1.0, ge=0, le=100, description="tokens drawn from p^(1/T); 0 = argmax")
    token_from: Literal["current", "average"] = Field(
        "current", description="tokens drawn from the current p(x0 | x_t) (the authors' x0) or from p_bar")
    block_length: int | None = Field(None, ge=1, description="semi-autoregressive blocks of this many positions, "
                                     "decoded left to right, the steps split evenly (LLaDA); None = one block")
    key_omits_default: ClassVar[frozenset[str]] = frozenset({"block_length"})  # added after keys were recorded

    def init(self, state: DiscreteState, schedule: MaskSchedule, den: DiscreteDenoiser | None = None) -> DiscreteState:
        """history = (buffer (B, d, L, V) of past log-probs, newest first, -inf while unfilled, filled (B,), previous
        argmax (B, L), previous step's top-w undecided positions (B, L) bool). Without the model (den None) V is
        unknown and the buffer gets its width at the first step; sized here, rows may start finished (a template
        row with nothing masked) while others step."""
        b, length = state.batch, state.length
        dev = state.device
        width = 0 if den is None else den.vocab.size
        buffer = torch.full((b, self.history, length, width), -math.inf, dtype=torch.float64, device=dev)
        return super().init(state, schedule, den).replace(history=(
            buffer, torch.zeros(b, dtype=torch.long, device=dev),
            torch.full((b, length), -1, dtype=torch.long, device=dev),
            torch.zeros((b, length), dtype=torch.bool, device=dev)))

    def finished(self, state: DiscreteState, schedule: MaskSchedule, den: DiscreteDenoiser) -> torch.Tensor:
        """Every step taken, or no masked position left (CCD-DS finishes early)."""
        return super().finished(state, schedule, den) | ~(state.masked(den.mask_id) & ~state.fixed).any(-1)

    def push(self, state: DiscreteState, logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(new buffer (B, d, L, V) with logp (B, L, V) first, filled (B,))."""
        buffer, filled = state.history[0], state.history[1]
        if buffer.shape[-1] != logp.shape[-1]:
            buffer = torch.full((*buffer.shape[:3], logp.shape[-1]), -math.inf, dtype=torch.float64,
                                device=logp.device)
        buffer = torch.cat([logp[:, None], buffer[:, :-1]], 1)
        return buffer, torch.clamp(filled + 1, max=self.history)

    def draw(self, base: torch.Tensor, state: DiscreteState, noise: NoiseSource) -> torch.Tensor:
        """(B, L) tokens from base (B, L, V) at the sampler's temperature (keys: particle, step, TOKEN)."""
        if self.temperature == 0:
            return base.argmax(-1)
        return categorical(noise, normalise(base / self.temperature), state.particle, state.step, TOKEN,
                           self.precision)

    def checked(self, state: DiscreteState, scores: torch.Tensor, eligible: torch.Tensor, k: torch.Tensor,
                plain: torch.Tensor, agree: torch.Tensor, w: torch.Tensor, local: torch.Tensor,
                per_block: int) -> torch.Tensor:
        """(B, L) bool positions a step decodes under the cross-step check (the plain top-k plain (B, L) where
        it does not apply); agree (B, L): argmax unchanged since the previous step; w (B,) the window; local (B,)
        the step within the block of per_block steps (the whole row: the step of the schedule)."""
        prev_top = state.history[3]
        passing = top_k_positions(scores, eligible, w) & prev_top & agree  # (B, L)
        n_pass = passing.sum(-1)  # (B,)
        active = (local >= self.warmup) & (local < per_block - 1)
        use = active & (plain & prev_top).any(-1) & (n_pass >= k) & (k > 0)  # (B,)
        if self.consistency == "rectify":
            passing = top_k_positions(scores, passing, k)
        return torch.where(use[:, None], passing, plain)

    def step(self, den: DiscreteDenoiser, schedule: MaskSchedule, state: DiscreteState,
             noise: NoiseSource) -> DiscreteState:
        blocks, per_block = block_plan(schedule, state.length, self.block_length)
        inside, local = block_window(state, blocks, per_block)  # (B, L), (B,)
        eligible = inside & state.masked(den.mask_id) & ~state.fixed  # (B, L)
        holes, left = (inside & ~state.fixed).sum(-1), eligible.sum(-1)  # (B,) in the block
        k = torch.minimum(decode_counts(schedule, holes, local, per_block), left)  # (B,)
        logp = den(state.tokens, state.t).to(torch.float64)  # (B, L, V)
        buffer, filled = self.push(state, logp)
        mean = averaged(buffer, filled)  # (B, L, V) log p_bar
        chosen = self.draw(logp if self.token_from == "current" else mean, state, noise)  # (B, L)
        scores = position_scores(mean, chosen, self.score)  # (B, L)
        update = top_k_positions(scores, eligible, k)  # (B, L)
        argmax = logp.argmax(-1)  # (B, L)
        w = window(local, k, left, holes, self.warmup, self.expand_ratio)  # (B,)
        if self.consistency != "off":
            update = self.checked(state, scores, eligible, k, update, argmax == state.history[2], w, local,
                                  per_block)
        prev_top = top_k_positions(scores, eligible & ~update, w)  # (B, L) the next step's verification set
        nxt = next_block_if_done(state.reveal(update, chosen, next_times(schedule, state)), schedule, per_block,
                                 eligible & ~update, blocks)
        return nxt.replace(history=(buffer, filled, argmax, prev_top))


def next_block_if_done(state: DiscreteState, schedule: MaskSchedule, per_block: int, still: torch.Tensor,
                       blocks: int) -> DiscreteState:
    """Rows whose block has nothing masked left (still (B, L): its undecided positions) before its last step
    move to the next block's first step and time; the others (every row of a single block) stay as they are."""
    block = ((state.step - 1) // per_block).clamp(max=blocks - 1)  # (B,) the block the step just worked on
    start = (block + 1) * per_block  # (B,) the next block's first step
    jump = ~still.any(-1) & (block < blocks - 1) & (state.step < start)  # (B,)
    step = torch.where(jump, start, state.step)
    times = schedule.times.to(state.device)  # (S + 1,)
    return state.replace(step=step, t=torch.where(jump, times[step.clamp(max=schedule.steps)], state.t))
