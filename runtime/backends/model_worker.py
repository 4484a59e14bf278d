"""ModelWorker: a Ray actor that keeps Denoisers resident and serves batched sampling and denoiser calls, and the
task that splits one `sample` node's batch across such workers (search strategies: split_denoiser.py).

Counter-based noise draws the same noise for the same (particle id, step, slot) however the batch is
cut, so each chunk is started with its global particle ids (`offset + arange(n)`) and the concatenated
chunks equal the single-process `sample` bit for bit (tests/test_ray_backend.py checks it). Each chunk checkpoints
under its own key (the node key and its rows) with the node's policy and resumes from there."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch

from ...graph.validate import Link, ResolvedNode
from ...nodes.core.context import NodeContext
from ...nodes.core.denoiser import Denoiser
from ...nodes.core.sampler import CheckpointPolicy, Sampler, run_steps
from ...nodes.core.sigmas import Sigmas
from ...nodes.samplers.sample import check_latent, resume
from ..checkpoints import CheckpointStore, KeyedCheckpoints
from ..executor import RunSettings, lookup, node_failure, store
from ..report import NodeReport, peak_rss_bytes
from ..values import report_value


@ray.remote
class ModelWorker:
    """One per GPU (`num_gpus=1, num_cpus=0`; logical GPUs in tests). Models stay loaded between calls,
    by their Merkle key; a restarted worker (max_restarts) loads them again on its next call."""

    def __init__(self) -> None:
        self.models: dict[str, Denoiser] = {}
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def pid(self) -> int:
        return os.getpid()

    def resident(self) -> list[str]:
        return list(self.models)

    def sample(self, model_key: str, boxed_model: list[ray.ObjectRef], sigmas: Sigmas, sampler: Sampler,
               latent: torch.Tensor, offset: int, seed: int, checkpoint: ChunkCheckpoint | None = None
               ) -> tuple[torch.Tensor, int, int]:
        """The sample node on particles offset..offset+n-1 of its batch: final x (n, ...), the batched
        denoiser calls made and the step it resumed from. `boxed_model` is a one-element list so that Ray
        does not fetch the model on every call: it is fetched only when not resident. With `checkpoint` the
        chunk resumes from its latest checkpoint and saves new ones as the policy says."""
        x = latent.to(self.device)
        particle = torch.arange(offset, offset + x.shape[0], device=self.device)
        ctx = NodeContext(node_id="sample", device=self.device, out_dir=Path("."), seed=seed,
                          is_cancelled=task_cancelled)
        policy = None
        if checkpoint is not None:
            ctx.checkpoints, policy = checkpoint.service(), checkpoint.policy
        state = resume(sampler.init(x, sigmas, particle), ctx)
        state = run_steps(sampler, self.model(model_key, boxed_model), state, ctx.noise, ctx, policy)
        return state.x.cpu(), int(ctx.metrics.get("nfe", 0)), int(ctx.metrics["resumed_from_step"])

    def denoise(self, model_key: str, boxed_model: list[ray.ObjectRef], xs: list[torch.Tensor],
                sigmas: list[torch.Tensor], renoise: bool) -> list[tuple[torch.Tensor, ...]]:
        """Denoiser calls of a split search strategy (runtime/backends/split_denoiser.py): each block xs[i]
        (b_i, ...) at sigmas[i] (b_i,) as one call, (x0,) or (x0, x0_renoise) each, on the CPU."""
        blocks = self.model(model_key, boxed_model).evaluate_many(
            [x.to(self.device) for x in xs], [s.to(self.device) for s in sigmas], renoise)
        return [tuple(t.cpu() for t in block) for block in blocks]

    def model(self, model_key: str, boxed_model: list[ray.ObjectRef]) -> Denoiser:
        """The resident model under `model_key`, fetched from its boxed ref (and moved here) the first time."""
        if model_key not in self.models:
            self.models[model_key] = ray.get(boxed_model[0]).to(self.device)
        return self.models[model_key]


@dataclass(frozen=True)
class ChunkCheckpoint:
    """Where and when one chunk of a split `sample` checkpoints: its own key (the node's key and the chunk's
    rows, so a re-run with the same cut resumes it) under the shared disk cache's root."""

    root: str
    key: str
    policy: CheckpointPolicy

    @classmethod
    def of_chunk(cls, root: str, node_key: str, offset: int, size: int, batch: int,
                 policy: CheckpointPolicy) -> ChunkCheckpoint:
        return cls(root, f"{node_key}.rows{offset}-{offset + size}of{batch}", policy)

    def service(self) -> KeyedCheckpoints:
        return CheckpointStore(self.root).for_key(self.key)


def task_cancelled() -> bool:
    """True once the driver has ray.cancel()ed the running task or actor call (loops check it between steps)."""
    return ray.get_runtime_context().is_canceled()


def chunks(batch: int, parts: int) -> list[tuple[int, int]]:
    """(offset, size) of `parts` near-equal contiguous chunks of `batch` (no empty chunk)."""
    parts = max(1, min(parts, batch))
    base, extra = divmod(batch, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (i < extra)
        out.append((start, size))
        start += size
    return out


@ray.remote(num_returns=2, max_retries=3, retry_exceptions=False)
def split_sample_task(rn: ResolvedNode, key: str, settings: tuple, links: list[Link], workers: list[Any],
                      model_key: str, *inputs: Any) -> tuple[dict[str, Any], NodeReport]:
    """The `sample` node over `workers` (`model_key`: the Merkle key of its denoise input, under which the
    workers keep the model resident): a disk-cache hit is returned as is; otherwise the latent is cut into
    one chunk per worker, each sampled by a worker, and the chunks joined (and stored in the disk cache)."""
    from .ray_backend import worker_settings

    start = time.perf_counter()
    run = worker_settings(*settings)
    entry, cache = lookup(rn, key, run)
    if entry is not None:
        outputs, metrics, nfe = entry.outputs, dict(entry.metrics), 0
    else:
        ports = {link_port(rn, link): (link, produced[link.port]) for link, produced in zip(links, inputs)}
        model = ports["denoise"][1]
        sigmas, sampler, latent = (ports[p][1] for p in ("sigmas", "sampler", "latent"))
        check_latent(latent)
        model_ref = ray.put(model)
        parts = chunks(latent.shape[0], len(workers))
        saves = chunk_checkpoints(rn, key, run, parts, latent.shape[0])
        calls = [w.sample.remote(model_key, [model_ref], sigmas, sampler, latent[off:off + n], off, run.seed, save)
                 for w, (off, n), save in zip(workers, parts, saves)]
        try:
            done = ray.get(calls)
        except ray.exceptions.RayTaskError as e:  # the node's own error, located like a local run's
            raise node_failure(rn, e.cause if isinstance(e.cause, Exception) else e, run.device) from None
        outputs = {"out": torch.cat([x for x, _, _ in done]).to(latent.device)}
        metrics = {"workers": len(calls), "resumed_from_steps": [step for _, _, step in done]}
        nfe, cache = max(n for _, n, _ in done), "miss"
        store(rn, key, outputs, metrics, run)
        for save in saves:  # the output is stored: the chunks' checkpoints are spent
            if save is not None:
                save.service().discard()
    out = outputs["out"]
    return outputs, NodeReport(rn.id, rn.spec.kind, cache, time.perf_counter() - start, nfe, str(out.device),
                               peak_rss_bytes(), None, {"out": report_value(out)}, metrics)


def chunk_checkpoints(rn: ResolvedNode, key: str, run: RunSettings, parts: list[tuple[int, int]], batch: int
                      ) -> list[ChunkCheckpoint | None]:
    """Each chunk's checkpointing, from the sample node's own policy; none without a disk cache (as locally)."""
    params = rn.params
    policy = CheckpointPolicy(steps=params.checkpoint_every, seconds=params.checkpoint_seconds)
    if run.disk is None or (policy.steps is None and policy.seconds is None):
        return [None] * len(parts)
    return [ChunkCheckpoint.of_chunk(str(run.disk.root), key, off, n, batch, policy) for off, n in parts]


def link_port(rn: ResolvedNode, link: Link) -> str:
    """The input port of `rn` that `link` feeds."""
    return next(port for port, l in rn.inputs.items() if l == link)
