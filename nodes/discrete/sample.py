"""discrete.sample: run a discrete sampler over a mask schedule from a template (the token analogue of `sample`)."""
from __future__ import annotations

import time
from typing import ClassVar

from pydantic import Field

from ..api import Node, node
from ..core.context import NodeContext
from .denoiser import CountingDiscreteDenoiser, DiscreteDenoiser
from .sampler import DiscreteSampler, masked_fraction_error, run_discrete
from .samples import DiscreteSamples
from .schedule import MaskSchedule
from .template import Template


@node("discrete.sample", version=1)
class DiscreteSample(Node):
    """Fill every template row `particles` times with the sampler, each row an independent draw."""

    uses_seed: ClassVar[bool] = True
    particles: int = Field(1, ge=1, le=1_000_000, description="independent samples per template text")

    def run(self, denoiser: DiscreteDenoiser, schedule: MaskSchedule, sampler: DiscreteSampler,
            template: Template, ctx: NodeContext) -> DiscreteSamples:
        started = time.perf_counter()
        den = CountingDiscreteDenoiser(denoiser)
        state, group, groups = template.start(den, self.particles, ctx.noise, ctx.device)
        state = run_discrete(sampler, den, schedule, state, ctx.noise)
        masked_fraction_error(state, den)
        out = DiscreteSamples.of_state(state, den, group=group)
        wall = time.perf_counter() - started
        ctx.record(nfe=den.calls, denoiser_rows=den.rows, rows=len(out), groups=groups,
                   steps_max=int(state.step.max()), wall_s=round(wall, 6))
        return out
