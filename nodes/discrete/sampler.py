"""DiscreteSampler: `init(state, schedule) -> DiscreteState`, `step(den, schedule, state, noise) ->
DiscreteState`, the token analogue of nodes/core/sampler.py. A sampler is a node whose output is
itself; it never owns a loop: `run_discrete` is the one generic loop, and search strategies (SMC,
SVDD, best-of-N) drive `step` directly over particles."""
from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node
from ..core.noise import NoiseSource
from .denoiser import DiscreteDenoiser
from .draws import Precision
from .schedule import MaskSchedule
from .state import DiscreteState


class DiscreteSampler(Node):
    """Base of every discrete-diffusion sampler node."""

    noise_kinds: ClassVar[frozenset[str]] = frozenset({"masked"})  # the model kinds this sampler steps
    stochastic: ClassVar[bool] = True  # results depend on the seed

    precision: Precision = Field("float64", description="categorical draws: exact float64 Gumbel-max, or float32 "
                                 "as MDLM's code (lowers the effective temperature: Zheng et al. 2024); "
                                 "float32 exists to demonstrate that bug")

    def run(self) -> DiscreteSampler:
        return self

    def check(self, den: DiscreteDenoiser) -> None:
        """NodeError when this sampler cannot step the model's kind of noise."""
        if den.noise not in self.noise_kinds:
            raise NodeError(f"this sampler steps {' or '.join(sorted(self.noise_kinds))} diffusion models, "
                            f"but the model is a {den.noise}-noise model; pick a sampler for {den.noise} noise")

    def init(self, state: DiscreteState, schedule: MaskSchedule, den: DiscreteDenoiser | None = None) -> DiscreteState:
        """Rows at the start of the schedule (t = times[0] = 1, step 0); `den` (when given) lets a sampler size
        its history for the model (its vocabulary) before any row steps."""
        t = schedule.times[0].to(state.device).expand(state.batch).clone()
        return state.replace(step=torch.zeros_like(state.step), t=t)

    def finished(self, state: DiscreteState, schedule: MaskSchedule, den: DiscreteDenoiser) -> torch.Tensor:
        """(B,) bool: rows this sampler has finished (default: every step of the schedule taken)."""
        return state.step >= schedule.steps

    @abstractmethod
    def step(self, den: DiscreteDenoiser, schedule: MaskSchedule, state: DiscreteState,
             noise: NoiseSource) -> DiscreteState:
        """One step of every row of `state` (none finished)."""


def run_discrete(sampler: DiscreteSampler, den: DiscreteDenoiser, schedule: MaskSchedule, state: DiscreteState,
                 noise: NoiseSource) -> DiscreteState:
    """Step the unfinished rows until every row is finished; rows finish independently."""
    sampler.check(den)
    state = sampler.init(state, schedule, den)
    while bool((~sampler.finished(state, schedule, den)).any()):
        state = step_unfinished(sampler, den, schedule, state, noise)
    return state


def step_unfinished(sampler: DiscreteSampler, den: DiscreteDenoiser, schedule: MaskSchedule, state: DiscreteState,
                    noise: NoiseSource) -> DiscreteState:
    """One step of the rows not finished yet (finished rows unchanged): the loop body of run_discrete,
    shared with the search strategies that drive a sampler over particles."""
    active = ~sampler.finished(state, schedule, den)  # (B,)
    if bool(active.all()):
        return sampler.step(den, schedule, state, noise)
    if not bool(active.any()):
        return state
    idx = active.nonzero().flatten()
    return state.put(idx, sampler.step(den, schedule, state[idx], noise))


def masked_fraction_error(state: DiscreteState, den: DiscreteDenoiser) -> None:
    """NodeError when a finished row still holds a mask token (a sampler bug, never silent)."""
    left = int(state.masked(den.mask_id).sum())
    if left:
        raise NodeError(f"the sampler finished with {left} masked positions left; this is a bug in the sampler")
