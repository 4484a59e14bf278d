"""SplitDenoiser: a search strategy's denoiser calls cut along the batch (particle) axis over the model-resident
ModelWorker actors, while the strategy itself (its sampler steps, reward calls, weights and its one resampling
generator) runs in one task, unchanged; so resampling draws exactly what the local run draws.

Exactness on CPU. The sampler's noise is counter-based (keyed by particle id, nodes/core/noise.py) and drawn in the
strategy's task, so it never depends on the split; what the workers compute is the denoiser, and
- a call cut into max_batch chunks (the strategy's `max_batch`) sends whole chunks to the workers, each evaluated
  as the one call it is in the local run: bit-identical for any deterministic model;
- a single call (no max_batch) is cut into contiguous row blocks, one per worker: bit-identical when the model is
  batch-invariant (each row's output independent of the other rows and of the batch size: model.gmm is, the
  tests check it row by row), up to last-bit differences otherwise (a network whose BLAS kernel depends on the
  batch size); set max_batch to make any model exact.
Calls that autograd must differentiate through (search.tds's twist gradient) run here on the local model."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import ray
import torch

from ...graph.validate import Link, ResolvedNode
from ...nodes.core.denoiser import Denoiser
from ..report import NodeReport
from .model_worker import chunks

Blocks = list[tuple[torch.Tensor, ...]]


class SplitDenoiser(Denoiser):
    """`local` (the node's input value, kept for autograd calls and its metadata) evaluated by `workers`, which
    keep it resident under `model_key` (the Merkle key of the link that produced it)."""

    def __init__(self, local: Denoiser, workers: Sequence[Any], model_key: str):
        self.local, self.workers, self.model_key = local, list(workers), model_key
        self.boxed = [ray.put(local)]  # boxed so that a worker fetches the model only when it is not resident
        self.remote_calls = self.local_calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.evaluate_many([x], [sigma])[0][0]  # (B, ...)

    def estimates(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.separate_renoise:
            x0 = self(x, sigma)  # (B, ...)
            return x0, x0
        x0, x0_r = self.evaluate_many([x], [sigma], renoise=True)[0]
        return x0, x0_r

    def evaluations(self, sigma: torch.Tensor) -> int:
        return self.local.evaluations(sigma)

    @property
    def separate_renoise(self) -> bool:
        return self.local.separate_renoise

    @property
    def stateful(self) -> bool:
        return self.local.stateful

    def to(self, device: torch.device) -> Denoiser:
        return self  # the workers hold the model on their own devices; results come back to the caller's

    def evaluate_many(self, xs: Sequence[torch.Tensor], sigmas: Sequence[torch.Tensor],
                      renoise: bool = False) -> list[tuple[torch.Tensor, ...]]:
        """Several blocks: whole blocks to the workers (contiguous runs of blocks); one block: its rows cut."""
        if torch.is_grad_enabled() and any(x.requires_grad for x in xs):  # autograd needs the graph here
            self.local_calls += len(xs)
            return self.local.evaluate_many(xs, sigmas, renoise)
        device = xs[0].device
        if len(xs) == 1:
            parts = chunks(xs[0].shape[0], len(self.workers))
            done = self.on_workers([([xs[0][o:o + n]], [sigmas[0][o:o + n]]) for o, n in parts], renoise)
            out = [tuple(torch.cat(col) for col in zip(*(blocks[0] for blocks in done)))]
        else:
            parts = chunks(len(xs), len(self.workers))
            done = self.on_workers([(list(xs[o:o + n]), list(sigmas[o:o + n])) for o, n in parts], renoise)
            out = [block for blocks in done for block in blocks]
        self.remote_calls += 1
        return [tuple(t.to(device) for t in block) for block in out]

    def on_workers(self, work: list[tuple[list[torch.Tensor], list[torch.Tensor]]], renoise: bool) -> list[Blocks]:
        """Worker i evaluates work[i] (its blocks and their sigmas), all at once; each worker's blocks in order.
        A failure inside the model is raised as the model's own exception, as the local run raises it."""
        calls = [w.denoise.remote(self.model_key, self.boxed, [x.cpu() for x in xs], [s.cpu() for s in ss], renoise)
                 for w, (xs, ss) in zip(self.workers, work)]
        try:
            return ray.get(calls)
        except ray.exceptions.RayTaskError as e:
            raise (e.cause if isinstance(e.cause, Exception) else e) from None


def split_ports(rn: ResolvedNode) -> list[str]:
    """The Denoiser inputs of a search strategy (kind search.*) whose calls may be split; none for other nodes."""
    if not rn.spec.kind.startswith("search."):
        return []
    return [p.name for p in rn.spec.inputs
            if issubclass(p.type, Denoiser) and not p.many and isinstance(rn.inputs.get(p.name), Link)]


def split_inputs(rn: ResolvedNode, vals: dict[tuple[str, str], Any], workers: Sequence[Any],
                 model_keys: dict[str, str]) -> list[SplitDenoiser]:
    """Replace each of `rn`'s split Denoiser inputs in `vals` by a SplitDenoiser over `workers`."""
    made = []
    for port, model_key in model_keys.items():
        link = rn.inputs[port]
        made.append(SplitDenoiser(vals[(link.node, link.port)], workers, model_key))
        vals[(link.node, link.port)] = made[-1]
    return made


def split_report(entry: NodeReport, made: Sequence[SplitDenoiser], workers: int) -> NodeReport:
    """The node's report with how its denoiser calls went: calls split over `workers`, calls run here."""
    remote, local = sum(d.remote_calls for d in made), sum(d.local_calls for d in made)
    if entry.cache != "miss":
        return entry
    return replace(entry, metrics={**entry.metrics, "workers": workers, "split_calls": remote,
                                   "local_calls": local})
