"""sampler.plan: a per-step solver plan, the Unified Sampling Framework idea (Liu et al. 2023, USF).

Sampler k runs the steps from switch_at[k - 1] to switch_at[k] as if that segment of the
schedule were its whole schedule: it starts fresh (its own init, warm-up and lower-order-final
rules) at its first step with the current x. Segments share their boundary level. The plan's
State keeps every sampler's history side by side (the concatenation of their init layouts), so
`state[idx]` still carries everything; a sampler reads and writes only its own slice. Normals
stay keyed by the global step, so segments never reuse a draw (Brownian draws are keyed by
sigma anyway). Particles in different segments share a step: one batched sub-step per segment."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.denoiser import Denoiser
from ..core.noise import NoiseSource
from ..core.sampler import Sampler
from ..core.sigmas import Sigmas
from ..core.state import State, bcast


@node("sampler.plan", version=1)
class Plan(Node):
    """Implements a per-step solver plan in the spirit of the Unified Sampling Framework of Liu et al. (2023)."""

    switch_at: list[int] = Field(min_length=1, description="steps where the next sampler takes over, increasing")

    def run(self, samplers: list[Sampler]) -> Sampler:
        """One sampler that runs samplers[k] on the k-th segment."""
        if len(samplers) != len(self.switch_at) + 1:
            raise NodeError(f"sampler.plan needs one sampler per segment: 'switch_at' {self.switch_at} makes "
                            f"{len(self.switch_at) + 1} segments, but input 'samplers' has {len(samplers)} links")
        if any(b <= a for a, b in zip([0, *self.switch_at], self.switch_at)):
            raise NodeError(f"'switch_at' must be increasing steps > 0, got {self.switch_at}")
        grid = Sigmas(torch.cat([torch.logspace(2, -3, 16, dtype=torch.float64), torch.zeros(1)]))  # 100 .. 0.001, 0
        probes = [s.init(torch.zeros(1, 1), grid) for s in samplers]
        for s, probe in zip(samplers, probes):
            if probe.sigmas.numel() != len(grid):
                raise NodeError(f"sampler.plan cannot run {s.__node_kind__}: its init rewrites the schedule "
                                f"(e.g. restart intervals); give it a schedule of its own instead")
        sizes = tuple(len(probe.history) for probe in probes)  # history arity is fixed by parameters
        return Planned(samplers=tuple(samplers), switch_at=tuple(self.switch_at), history_sizes=sizes)


class Planned(Sampler):
    """Samplers run one after another over segments of the schedule."""

    samplers: tuple[Sampler, ...]
    switch_at: tuple[int, ...]
    history_sizes: tuple[int, ...]  # entries of State.history each sampler owns, in order

    @property
    def step_order(self) -> int:
        """The lowest order of its samplers."""
        return min(s.step_order for s in self.samplers)

    @property
    def step_nfe(self) -> int:
        """The largest NFE per step of its samplers (a bound: each segment costs its own sampler's)."""
        return max(s.step_nfe for s in self.samplers)

    @property
    def draws_noise(self) -> bool:
        return any(s.draws_noise for s in self.samplers)

    @property
    def adapts_steps(self) -> bool:
        return any(s.adapts_steps for s in self.samplers)

    def init(self, x: torch.Tensor, sigmas: Sigmas, particle: torch.Tensor | None = None) -> State:
        """Every sampler's history layout, side by side (contents are replaced when its segment starts)."""
        base = super().init(x, sigmas, particle)
        parts = [s.init(x, sigmas, particle).history for s in self.samplers]
        return base.replace(history=tuple(h for part in parts for h in part))

    def step(self, denoise: Denoiser, state: State, noise: NoiseSource) -> State:
        """Each particle takes its segment's sampler step; one batched call per segment present."""
        steps = state.sigmas.numel() - 1
        starts = [0, *(min(s, steps) for s in self.switch_at)]
        bounds = torch.tensor(starts[1:], device=state.step.device)
        segment = torch.bucketize(state.step, bounds, right=True)  # (B,)
        sizes = self.history_sizes
        offsets = [sum(sizes[:k]) for k in range(len(sizes))]
        result = state
        for k, sampler in enumerate(self.samplers):
            idx = (segment == k).nonzero().squeeze(1)  # (A,)
            if idx.numel() == 0:
                continue
            part = state[idx]
            start, end = starts[k], starts[k + 1] if k + 1 < len(starts) else steps
            grid = Sigmas(part.sigmas[start:end + 1])
            own = part.history[offsets[k]:offsets[k] + sizes[k]]
            fresh = sampler.init(part.x, grid, part.particle)
            first = part.step == start  # (A,) segment starts here: the sampler's own fresh history
            own = tuple(torch.where(bcast(first, h), f, h) for f, h in zip(fresh.history, own))
            local = fresh.replace(step=part.step - start, denoised=part.denoised, history=own)
            moved = sampler.step(denoise, local, OffsetNoise(noise.seed, start))
            history = (*part.history[:offsets[k]], *moved.history, *part.history[offsets[k] + sizes[k]:])
            result = result.put(idx, part.advance(moved.x, moved.denoised, history))
        return result


class OffsetNoise(NoiseSource):
    """The run's normals at global step = a segment's local step + its first step."""

    def __init__(self, seed: int, offset: int):
        super().__init__(seed)
        self.offset = offset

    def normal(self, particle: torch.Tensor, step: torch.Tensor | int, shape: tuple[int, ...], slot: int = 0,
               dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        return super().normal(particle, step + self.offset, shape, slot, dtype, device)
