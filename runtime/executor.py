"""The executor: runs a validated workflow's needed nodes in topological order.

State of one run (all local to `execute`, so runs on one Runtime never share it):
- `order`: node ids needed by the requested outputs, topologically sorted (pruned first);
- `keys[node]`: its Merkle cache key = hash(kind, version, canonical params, input keys,
  seed if the node uses it), computed before the node runs; tensors are never hashed;
- `values[(node, port)]`: outputs still needed, dropped once their last consumer ran
  (requested outputs are kept);
- the report, filled one NodeReport per node.
Policy per node: check cancellation; memory cache, then disk cache (both only for
cacheable nodes not downstream of an uncacheable one); else run it with its inputs (moved to the run's device) and store what
it returned. A node that fails or is cancelled stores nothing."""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..graph.errors import NodeError, NodeRunError, RunCancelled, SamplegraphError
from ..graph.hashing import node_key
from ..graph.validate import Link, ResolvedNode, ValidGraph
from ..nodes.core.context import NodeContext
from ..nodes.core.denoiser import Denoiser
from . import values as V
from .cache import CacheWriteError, DiskCache, Entry, MemoryCache
from .checkpoints import CheckpointStore
from .events import (CacheDiscarded, CacheUndecodable, CacheWriteFailed, Event, NodeFinished, NodeStarted,
                     RunStarted, StepProgress)
from .preflight import fmt_bytes
from .report import NodeReport, RunReport, peak_rss_bytes


@dataclass
class RunSettings:
    device: torch.device
    seed: int
    out_dir: Path
    memory: MemoryCache | None
    disk: DiskCache | None
    emit: Callable[[Event], None]
    is_cancelled: Callable[[], bool]


def compute_keys(graph: ValidGraph, order: list[str], seed: int) -> dict[str, str | None]:
    """Merkle keys of the nodes in `order` (producers come first).

    None for a node that is not cacheable, and for everything downstream of one: a side
    effect's output is not determined by its key, so nothing derived from it may be cached."""
    keys: dict[str, str | None] = {}
    for node_id in order:
        rn = graph.nodes[node_id]
        spec = rn.spec
        inputs = {port: link_key(keys, link) for port, link in rn.inputs.items()} if spec.cacheable else None
        if inputs is None or None in inputs.values():
            keys[node_id] = None
            continue
        keys[node_id] = node_key(spec.kind, spec.version, rn.params.key_params(),
                                 inputs, seed if spec.uses_seed else None, rn.params.external_state())
    return keys


def link_key(keys: dict[str, str | None], link: Link | list[Link]) -> str | list[str] | None:
    """The input's key text, or None when a producer has no key (so neither may this node)."""
    if isinstance(link, list):
        found = [keys[l.node] for l in link]
        return None if None in found else [f"{k}:{l.port}" for k, l in zip(found, link)]
    key = keys[link.node]
    return None if key is None else f"{key}:{link.port}"


def execute(graph: ValidGraph, order: list[str], wanted: list[Link], report: RunReport,
            run: RunSettings) -> dict[tuple[str, str], Any]:
    """Run `order`; return the values of the `wanted` links. Fills `report` as it goes."""
    keys = compute_keys(graph, order, run.seed)
    refs = {node_id: input_refs(graph.nodes[node_id]) for node_id in order}
    remaining = consumer_counts(refs)
    keep = {(link.node, link.port) for link in wanted}
    vals: dict[tuple[str, str], Any] = {}
    emit, total = run.emit, len(order)
    emit(RunStarted(total))
    for index, node_id in enumerate(order):
        if run.is_cancelled():
            raise RunCancelled(f"run cancelled before node '{node_id}'")
        rn = graph.nodes[node_id]
        emit(NodeStarted(node_id, rn.spec.kind, index, total))
        entry = run_node(rn, keys[node_id], vals, run)
        report.nodes.append(entry)
        emit(NodeFinished(node_id, rn.spec.kind, entry.cache, entry.wall_s))
        release_inputs(refs[node_id], remaining, keep, vals)
    return {(link.node, link.port): vals[(link.node, link.port)] for link in wanted}


def run_node(rn: ResolvedNode, key: str | None, vals: dict, run: RunSettings) -> NodeReport:
    start = time.perf_counter()
    cuda = run.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(run.device)
    entry, cache = lookup(rn, key, run)
    nfe = 0
    if entry is None:
        ctx = make_context(rn, run, key)
        outputs = call_node(rn, gather_inputs(rn, vals, run.device), ctx)
        nfe = int(ctx.metrics.pop("nfe", 0))
        entry = Entry(outputs, ctx.metrics)
        cache = "uncached" if key is None else "miss"
        if key is not None:
            store(rn, key, entry, run)
            ctx.checkpoints.discard()
    described, devices = {}, set()
    for port, value in entry.outputs.items():
        vals[(rn.id, port)] = value
        described[port] = V.report_value(value)
        if device := V.device_of(value):
            devices.add(device)
    return NodeReport(node=rn.id, kind=rn.spec.kind, cache=cache, wall_s=time.perf_counter() - start,
                      nfe=nfe, device=",".join(sorted(devices)) or None, peak_rss_bytes=peak_rss_bytes(),
                      peak_cuda_bytes=torch.cuda.max_memory_allocated(run.device) if cuda else None,
                      outputs=described, metrics=dict(entry.metrics))


def lookup(rn: ResolvedNode, key: str | None, run: RunSettings) -> tuple[Entry | None, str]:
    if key is None:
        return None, "uncached"
    if run.memory is not None and (hit := run.memory.get(key)) is not None:
        return hit, "memory"
    if run.disk is not None:
        hit = run.disk.get(key, port_types_of(rn), run.device,
                           on_corrupt=lambda k, why: run.emit(CacheDiscarded(k, why)),
                           on_undecodable=lambda k, why: run.emit(CacheUndecodable(k, why)))
        if hit is not None:
            if run.memory is not None:
                run.memory.put(key, hit.outputs, hit.metrics)
            return hit, "disk"
    return None, "miss"


def store(rn: ResolvedNode, key: str, entry: Entry, run: RunSettings) -> None:
    if run.memory is not None:
        run.memory.put(key, entry.outputs, entry.metrics)
    if run.disk is not None:
        try:
            run.disk.put(key, entry.outputs, port_types_of(rn), entry.metrics)
        except CacheWriteError as e:  # the result is computed and in memory: the run goes on
            run.emit(CacheWriteFailed(key, str(e)))


def port_types_of(rn: ResolvedNode) -> dict[str, type]:
    """The declared class of each output port: what the disk cache encodes and decodes by."""
    return {p.name: p.type for p in rn.spec.outputs}


def make_context(rn: ResolvedNode, run: RunSettings, key: str | None = None) -> NodeContext:
    """The node's services; checkpoints are stored only for a cached node of a run with a disk cache."""
    def on_progress(step: int, total: int) -> None:
        run.emit(StepProgress(rn.id, step, total))

    ctx = NodeContext(node_id=rn.id, device=run.device, out_dir=run.out_dir,
                      seed=run.seed if rn.spec.uses_seed else None,
                      on_progress=on_progress, is_cancelled=run.is_cancelled)
    if key is not None and run.disk is not None:
        ctx.checkpoints = CheckpointStore(run.disk.root).for_key(key)
    return ctx


def gather_inputs(rn: ResolvedNode, vals: dict, device: torch.device) -> dict[str, Any]:
    return {port: [to_device(vals[(l.node, l.port)], device) for l in link] if isinstance(link, list)
            else to_device(vals[(link.node, link.port)], device) for port, link in rn.inputs.items()}


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors and models move to the run's device when a node uses them."""
    if isinstance(value, torch.Tensor) and value.device != device:
        return value.to(device)
    if isinstance(value, Denoiser):
        return value.to(device)
    return value


def call_node(rn: ResolvedNode, inputs: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
    if rn.spec.context_param is not None:
        inputs[rn.spec.context_param] = ctx
    try:
        result = rn.params.run(**inputs)
    except (RunCancelled, NodeRunError):
        raise
    except NodeError as e:
        raise NodeRunError(rn.id, rn.spec.kind, str(e)) from e
    except SamplegraphError as e:
        raise NodeRunError(rn.id, rn.spec.kind, str(e)) from e
    except Exception as e:
        if (oom := out_of_memory(e, ctx.device)) is not None:
            raise NodeRunError(rn.id, rn.spec.kind, oom) from e
        raise NodeRunError(rn.id, rn.spec.kind, f"internal error: {type(e).__name__}: {e}") from e
    return check_outputs(rn, result)


ALLOC_FAILURES = ("DefaultCPUAllocator", "alloc_cpu", "CUDA out of memory", "can't allocate memory")
REQUESTED = (re.compile(r"tried to allocate (\d+) bytes"), re.compile(r"Tried to allocate ([\d.]+ [KMGT]?i?B)"))


def out_of_memory(e: Exception, device: torch.device) -> str | None:
    """The located message for an allocation failure (CPU or CUDA), or None for any other error."""
    if not (isinstance(e, torch.OutOfMemoryError)
            or (isinstance(e, RuntimeError) and any(s in str(e) for s in ALLOC_FAILURES))):
        return None
    size = next((m.group(1) for rx in REQUESTED if (m := rx.search(str(e)))), None)
    if size is not None and size.isdigit():
        size = fmt_bytes(int(size))
    asked = f"an allocation of {size}" if size else "an allocation"
    return (f"out of memory on {device}: {asked} failed; lower this node's batch or sample size "
            f"(or its inputs'), or run on a device with more free memory")


def check_outputs(rn: ResolvedNode, result: Any) -> dict[str, Any]:
    ports = rn.spec.outputs
    outputs = dict(zip([p.name for p in ports], result)) if len(ports) > 1 or ports[0].name != "out" \
        else {"out": result}
    for port in ports:
        value = outputs.get(port.name)
        if not isinstance(value, port.type):
            raise NodeRunError(rn.id, rn.spec.kind, f"output '{port.name}' should be {port.type_name}, "
                               f"but run() returned {type(value).__name__} (a bug in the node)")
    return outputs


def input_refs(rn: ResolvedNode) -> list[tuple[str, str]]:
    """The (node, port) values `rn` reads, one per link (a value linked twice counts twice)."""
    return [(l.node, l.port) for link in rn.inputs.values() for l in (link if isinstance(link, list) else (link,))]


def consumer_counts(refs: dict[str, list[tuple[str, str]]]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for node_refs in refs.values():
        for ref in node_refs:
            counts[ref] = counts.get(ref, 0) + 1
    return counts


def release_inputs(refs: list[tuple[str, str]], remaining: dict, keep: set, vals: dict) -> None:
    """Drop values whose last consumer just ran (the caches keep what they hold)."""
    for ref in refs:
        remaining[ref] -= 1
        if remaining[ref] == 0 and ref not in keep:
            vals.pop(ref, None)
