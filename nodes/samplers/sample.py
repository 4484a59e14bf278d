"""sample: run a sampler over a schedule from an initial latent (ComfyUI's KSampler, as a graph node)."""
from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.preview import Preview
from ..core.sampler import CheckpointPolicy, Sampler, run_steps
from ..core.sigmas import Sigmas
from ..core.state import State, state_from_tensors


@node("sample", version=1)
class Sample(Node):
    """Solve from latent at sigmas[0] down the schedule with the sampler (Karras et al. 2022, Alg. 1/2).

    With a disk cache the state is checkpointed every `checkpoint_every` steps or `checkpoint_seconds`
    seconds, and a re-run after an interruption resumes from the last checkpoint, bit for bit. With a
    `preview` (latent.preview) its picture of the current x0 estimate is streamed as StepPreview events."""

    uses_seed: ClassVar[bool] = True
    # when to checkpoint changes no result, so it stays out of the cache key
    cache_exempt: ClassVar[frozenset[str]] = frozenset({"checkpoint_every", "checkpoint_seconds"})

    checkpoint_every: int | None = Field(None, ge=1, description="checkpoint every this many steps (None: off)")
    checkpoint_seconds: float | None = Field(20.0, gt=0, description="checkpoint every this many seconds (None: off)")

    def run(self, denoise: Denoiser, sigmas: Sigmas, sampler: Sampler, latent: torch.Tensor,
            ctx: NodeContext, preview: Preview | None = None) -> torch.Tensor:
        """The sampler's final x (B, ...), stepped by the one generic loop."""
        check_latent(latent)
        if preview is not None:  # before any step, listener or not: a wrong family's preview is a wiring error
            preview.check(latent)
        state = resume(sampler.init(latent, sigmas), ctx)
        policy = CheckpointPolicy(steps=self.checkpoint_every, seconds=self.checkpoint_seconds)
        observe = previewer(preview, ctx) if preview is not None and ctx.previews() else None
        return run_steps(sampler, denoise, state, ctx.noise, ctx, policy, observe).x  # (B, ...)


def previewer(preview: Preview, ctx: NodeContext) -> Callable[[int, int, State], None]:
    """run_steps' observer that shows the x0 estimate (State.denoised) when the preview is due."""
    def observe(step: int, total: int, state: State) -> None:
        if state.denoised is not None and preview.due(step, total):
            ctx.preview(step, total, preview.image(state.denoised))

    return observe


def resume(start: State, ctx: NodeContext) -> State:
    """`start`, or the state of the node's latest checkpoint when one fits it (recorded as resumed_from_step)."""
    found = ctx.checkpoints.load_latest()
    step = 0
    if found is not None:
        step, tensors = found
        state = state_from_tensors(tensors, start.sigmas)
        if state.x.shape == start.x.shape and state.x.dtype == start.x.dtype:
            start = state
        else:  # same key, other layout: cannot happen for a sound key; start over rather than fail
            step = 0
    ctx.record(resumed_from_step=step)
    return start


def check_latent(latent: torch.Tensor) -> None:
    """Reject latents a sampler cannot step: no batch dimension, or not floating point."""
    if latent.ndim < 2:
        raise NodeError(f"input 'latent' must have a batch dimension first, (B, ...), got shape "
                        f"{tuple(latent.shape)}; set latent.noise 'shape' to one sample's shape, e.g. [2]")
    if not latent.is_floating_point():
        raise NodeError(f"input 'latent' must be a floating-point tensor, got {latent.dtype}; "
                        f"use dtype float32 or float64")
