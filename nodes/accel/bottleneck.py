"""sample.bottleneck: high-low-high resolution sampling (Tian et al. 2025, "Training-free Diffusion
Acceleration with Bottleneck Sampling").

The schedule `sigmas` is cut into stages of `steps[i]` steps run at image side `sizes[i]` (e.g. 28,
16, 28: the DiT sees 49, 16 and 49 tokens). Where the resolution changes, the paper's two fixes:
- noise reintroduction: the stage starts from the previous stage's x0 estimate (its last model
  evaluation's), resized (networks/dit.py `resize`), re-noised with fresh noise to a raised level
  sigma_start = lift * sigma_boundary (x = x0 + sigma_start * eps in the samplers' VE space; the
  paper re-noises a flow latent, (1 - t) x0 + t eps, the same operation in flow time);
- scheduler re-shifting: the stage's steps are re-spaced from sigma_start down to the stage's end
  (Karras rho spacing between the two; the paper shifts its flow timesteps per stage).
Stages of the same size with no change in between run as one, so sizes all equal to the latent's
is plain sampling exactly (the same states, history and noise). Noise: stage segment k > 0 draws
its solver noise from NoiseSource(seed + k * SEGMENT_SEED) and its re-noise at step key
INITIAL_STEP - k, so no draw repeats one of another segment.

Cost: NFE as usual; `pixel_evaluations` / `dense_pixel_evaluations` (recorded) is the fraction of
the plain run's per-sample pixels (for a patch DiT: tokens) evaluated over all calls.
Departures: the paper tunes stage lengths and shifts per model (FLUX, HunyuanVideo); here
they are parameters, and the model must denoise every stage's resolution (model.mnist_dit is trained
on 28 x 28 and 16 x 16: see training/train_dit.py)."""
from __future__ import annotations

from typing import Annotated, ClassVar

import torch
from pydantic import Field, model_validator

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.noise import INITIAL_STEP, NoiseSource
from ..core.sampler import Sampler, run_steps
from ..core.sigmas import Sigmas
from ..core.state import State
from ..models.networks.dit import resize
from ..samplers.sample import check_latent

SEGMENT_SEED = 1_000_003
RHO = 7.0  # Karras et al. (2022): the spacing of the re-spaced stage schedules


class PixelCounter(Denoiser):
    """Counts per-sample pixels evaluated (rows x H x W per call) through the wrapped denoiser; stateless, so a
    stateful model (model.ras, whose caches have one resolution) refuses to run inside sample.bottleneck."""

    def __init__(self, inner: Denoiser):
        self.inner, self.pixels = inner, 0

    def evaluations(self, sigma: torch.Tensor) -> int:
        return self.inner.evaluations(sigma)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.pixels += x[0].numel() * self.inner.evaluations(sigma)
        return self.inner(x, sigma)


def respace(start: float, end: float, steps: int, floor: float) -> torch.Tensor:
    """(steps + 1,) float64 sigmas from start down to end, Karras rho-spaced; for end 0 the spacing runs to
    `floor` (the schedule's last positive sigma) and the last level is 0, as schedules end."""
    ramp = torch.linspace(0, 1, steps if end == 0.0 else steps + 1, dtype=torch.float64)
    low = floor if end == 0.0 else end
    levels = (start ** (1 / RHO) + ramp * (low ** (1 / RHO) - start ** (1 / RHO))) ** RHO
    return torch.cat([levels, levels.new_zeros(1)]) if end == 0.0 else levels


@node("sample.bottleneck", version=1)
class SampleBottleneck(Node):
    """High-low-high resolution stages with re-noising at each change (Tian et al. 2025, Bottleneck Sampling)."""

    uses_seed: ClassVar[bool] = True

    sizes: list[Annotated[int, Field(ge=1)]] = Field([28, 16, 28], min_length=1, description="image side "
                                                      "per stage; the first and last must be the latent's")
    steps: list[Annotated[int, Field(ge=1)]] = Field([4, 10, 4], min_length=1, description="steps of "
                                                      "`sigmas` each stage covers (they must add up to its steps)")
    lift: float = Field(1.5, ge=1.0, description="noise reintroduction: at a resolution change the stage "
                        "starts at lift * the boundary sigma (1 = no extra noise)")

    @model_validator(mode="after")
    def _same_length(self) -> SampleBottleneck:
        if len(self.sizes) != len(self.steps):
            raise ValueError(f"'sizes' has {len(self.sizes)} stages but 'steps' has {len(self.steps)}; give one "
                             f"step count per stage")
        return self

    def run(self, denoise: Denoiser, sigmas: Sigmas, sampler: Sampler, latent: torch.Tensor,
            ctx: NodeContext) -> torch.Tensor:
        """The final x (B, H, W) after every stage."""
        check_latent(latent)
        self.check(sigmas, latent)
        counter = PixelCounter(denoise)
        segments = self.segments(sigmas.values)
        x, state = latent, None
        for k, (side, start, stop) in enumerate(segments):
            if k == 0:
                plan = sigmas.values[start:stop + 1]
            else:
                x, plan = self.renoise(self.estimate(state, counter, ctx), side, sigmas.values, start, stop, k, ctx)
            state = run_steps(sampler, counter, sampler.init(x, Sigmas(plan)), self.noise(ctx, k), ctx)
            x = state.x
        dense = latent[0].numel() * ctx.metrics.get("nfe", 0)
        ctx.record(pixel_evaluations=counter.pixels, dense_pixel_evaluations=dense,
                   cost_fraction=counter.pixels / dense if dense else 1.0, stages=len(segments))
        return x  # (B, H, W)

    def check(self, sigmas: Sigmas, latent: torch.Tensor) -> None:
        """NodeErrors for a stage plan that does not fit the schedule or the latent."""
        if sum(self.steps) != sigmas.steps:
            raise NodeError(f"sample.bottleneck: 'steps' {self.steps} add up to {sum(self.steps)}, but the schedule "
                            f"has {sigmas.steps} steps; make them match")
        if latent.ndim != 3 or latent.shape[1] != latent.shape[2]:
            raise NodeError(f"sample.bottleneck needs square images (B, H, H); got latent {tuple(latent.shape)}")
        if self.sizes[0] != latent.shape[1] or self.sizes[-1] != latent.shape[1]:
            raise NodeError(f"sample.bottleneck: the first and last of 'sizes' {self.sizes} must be the latent's "
                            f"side {latent.shape[1]} (high-low-high)")

    def segments(self, sigmas: torch.Tensor) -> list[tuple[int, int, int]]:
        """(side, first step, end step) of each run, merging neighbouring stages of the same side."""
        out: list[tuple[int, int, int]] = []
        first = 0
        for side, n in zip(self.sizes, self.steps):
            if out and out[-1][0] == side:
                out[-1] = (side, out[-1][1], first + n)
            else:
                out.append((side, first, first + n))
            first += n
        return out

    @staticmethod
    def estimate(state: State, denoise: Denoiser, ctx: NodeContext) -> torch.Tensor:
        """The x0 estimate (B, H, W) that ends a segment: its last evaluation's, or one more call (one NFE)
        for a sampler that keeps none."""
        if state.denoised is not None:
            return state.denoised
        ctx.add_nfe(1)
        sigma = state.sigmas[state.step].to(state.x.dtype)  # (B,)
        return denoise(state.x, sigma)

    def renoise(self, x0: torch.Tensor, side: int, sigmas: torch.Tensor, start: int, stop: int, k: int,
                ctx: NodeContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The next segment's start x (B, side, side) and its re-spaced sigmas: resized x0 plus fresh noise."""
        boundary, end = float(sigmas[start]), float(sigmas[stop])
        top = min(self.lift * boundary, float(sigmas[0]))
        small = resize(x0, side)  # (B, side, side)
        particle = torch.arange(x0.shape[0], device=x0.device)  # (B,)
        eps = ctx.noise.normal(particle, INITIAL_STEP - k, (side, side), dtype=x0.dtype, device=x0.device)
        floor = float(sigmas[sigmas > 0][-1])
        return small + top * eps, respace(top, end, stop - start, floor)

    def noise(self, ctx: NodeContext, k: int) -> NoiseSource:
        """The solver noise of segment k: the workflow's for the first, a derived seed for later ones."""
        return ctx.noise if k == 0 else NoiseSource(ctx.noise.seed + k * SEGMENT_SEED)
