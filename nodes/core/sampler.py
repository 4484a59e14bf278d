"""Sampler (solver) contract: `init(x, sigmas) -> State`, `step(denoise, state, noise) -> State`.

A sampler is a node whose output is itself (a frozen, parameterised object). It never owns
a loop: `run_steps` below is the one generic loop, and search strategies drive `step`
directly over particles."""
from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from ...graph.errors import NodeError
from .context import NodeContext
from .denoiser import CountingDenoiser, Denoiser
from .noise import NoiseSource
from .sigmas import Sigmas
from .state import State, state_tensors
from ..api import Node


class Sampler(Node):
    """Base of every solver node; subclasses set `order` and `nfe_per_step` and define `step`.

    The ClassVars describe the class's default parameters (documentation, `samplegraph nodes`).
    What a configured sampler does is read from the instance: `step_order`, `step_nfe`,
    `draws_noise` and `adapts_steps` return the ClassVars unless a subclass whose parameters
    change the answer (solver_order, eta, s_churn, wrappers) overrides them."""

    order: ClassVar[int] = 1  # convergence order (noise-drawing samplers: of their noise-free limit, eta = 0)
    nfe_per_step: ClassVar[int] = 1  # denoiser calls per step (a final step to sigma 0 may use fewer)
    stochastic: ClassVar[bool] = False  # True when results depend on the noise (the seed)
    adaptive: ClassVar[bool] = False  # True when a step may take several attempts (error control)
    supports_renoise: ClassVar[bool] = False  # True when steps take Denoiser.estimates (CFG++'s re-noise estimate)

    @property
    def step_order(self) -> int:
        """Convergence order of this configuration (`order` for the class defaults)."""
        return self.order

    @property
    def step_nfe(self) -> int:
        """Batched denoiser calls per step before the last (adaptive: per attempt); `nfe_per_step` by default."""
        return self.nfe_per_step

    def nfe_at(self, step: int) -> int:
        """Batched denoiser calls of step `step` (not the last): step_nfe unless a warm start costs more
        than the steps after it (sampler.pndm's Runge-Kutta start), when step_nfe is the most a step takes."""
        return self.step_nfe

    @property
    def draws_noise(self) -> bool:
        """True when this configuration draws noise, so its results depend on the seed (unless a schedule
        avoids every noisy step, e.g. a churn window above sigma_max); `stochastic` by default."""
        return self.stochastic

    @property
    def adapts_steps(self) -> bool:
        """True when a step may take a data-dependent number of attempts; `adaptive` by default."""
        return self.adaptive

    def run(self) -> Sampler:
        return self

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """Start at x (B, ...) on sigmas[0]; particle ids default to 0..B-1."""
        b = x.shape[0]
        if particle is None:
            particle = torch.arange(b, device=x.device)
        return State(x=x, sigmas=sigmas.values.to(device=x.device, dtype=x.dtype),
                     step=torch.zeros(b, dtype=torch.long, device=x.device), particle=particle.to(x.device))

    @abstractmethod
    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """One step from state.sigma to state.sigma_next (both (B,))."""


@dataclass
class CheckpointPolicy:
    """When run_steps saves the state to ctx.checkpoints: every `steps` steps and/or every `seconds`
    seconds of wall time (None turns a criterion off); never after the last step (the output is stored)."""

    steps: int | None = None
    seconds: float | None = 20.0


def run_steps(sampler: Sampler, denoise: Denoiser, state: State, noise: NoiseSource,
              ctx: NodeContext | None = None, checkpoint: CheckpointPolicy | None = None,
              observe: Callable[[int, int, State], None] | None = None) -> State:
    """The one generic loop: step every unfinished particle until its schedule ends.

    Particles may be at different steps; finished ones are left alone. Cancellation is
    checked and progress reported between steps; NFE is accounted to ctx; with a `checkpoint`
    policy the state is saved to ctx.checkpoints as it says; `observe(done, total, state)` sees
    the state after every step (progress previews)."""
    check_renoise(sampler, denoise)
    counted = CountingDenoiser(denoise)
    total = state.sigmas.numel() - 1
    lo, hi = int(state.step.min()), int(state.step.max())
    saver = Checkpointer(ctx, checkpoint, total, lo)
    if lo == hi:  # lockstep (the usual case): a known number of steps, no per-step bookkeeping
        for i in range(lo, total):
            if ctx is not None:
                ctx.check_cancelled()
            state = step_once(sampler, denoise, counted, state, noise)
            if ctx is not None:
                ctx.progress(i + 1, total)
            if observe is not None:
                observe(i + 1, total, state)
            saver.after(i + 1, state)
    else:
        while bool((active := ~state.done).any()):  # (B,)
            if ctx is not None:
                ctx.check_cancelled()
            idx = active.nonzero().squeeze(1)  # (A,)
            state = state.put(idx, step_once(sampler, denoise, counted, state[idx], noise))
            done = int(state.step.min())
            if ctx is not None:
                ctx.progress(done, total)
            if observe is not None:
                observe(done, total, state)
            saver.after(done, state)
    if ctx is not None:
        ctx.add_nfe(counted.calls)
        if denoise.stateful and state.memory:
            ctx.record(**denoise.memory_metrics(state.memory))
    return state


class Checkpointer:
    """Applies a CheckpointPolicy inside run_steps (a no-op without a policy or an enabled service)."""

    def __init__(self, ctx: NodeContext | None, policy: CheckpointPolicy | None, total: int, start: int):
        self.service = ctx.checkpoints if ctx is not None and policy is not None else None
        self.policy = policy
        self.total = total
        self.last_step = start
        self.last_time = time.monotonic()

    def after(self, step: int, state: State) -> None:
        """Save `state` (the first `step` steps done) when the policy says it is due."""
        if self.service is None or not self.service.enabled or step >= self.total:
            return
        p, now = self.policy, time.monotonic()
        by_steps = p.steps is not None and step - self.last_step >= p.steps
        by_time = p.seconds is not None and now - self.last_time >= p.seconds
        if (by_steps or by_time) and step != self.last_step:
            self.service.save(step, state_tensors(state))
            self.last_step, self.last_time = step, time.monotonic()


def step_once(sampler: Sampler, denoise: Denoiser, counted: CountingDenoiser, state: State,
              noise: NoiseSource) -> State:
    """One step through `counted` (which wraps `denoise`); a stateful Denoiser is bound to State.memory
    (initialised on the first step) and its updated memory is stored back, so it follows the particles."""
    if not denoise.stateful:
        return sampler.step(counted, state, noise)
    bound = denoise.bound(state.memory or denoise.memory_init(state.x))
    inner = CountingDenoiser(bound)
    out = sampler.step(inner, state, noise)
    counted.calls += inner.calls
    return out.replace(memory=bound.memory)


def check_renoise(sampler: Sampler, denoise: Denoiser) -> None:
    """Reject a denoiser with a separate re-noise estimate (CFG++) on a sampler that would ignore it."""
    if denoise.separate_renoise and not sampler.supports_renoise:
        raise NodeError(f"the denoiser has a separate re-noise estimate (guidance.cfg_pp), which "
                        f"{type(sampler).__name__} would ignore; use sampler.euler, sampler.euler_ancestral, "
                        f"sampler.ddim or sampler.dpmpp_2m, or guidance.cfg for other samplers")
