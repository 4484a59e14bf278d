"""The executor: runs a validated workflow's needed nodes in topological order.

State of one run (all local to `execute`, so runs on one Runtime never share it):
- `order`: node ids needed by the requested outputs, topologically sorted (pruned first);
- `keys[node]`: its Merkle cache key = hash(kind, version, canonical params, input keys,
  seed if the node uses it), computed before the node runs; tensors are never hashed; a run
  without caches only marks which nodes would have one (nothing would read the hashes);
- `values[(node, port)]`: outputs still needed, dropped once their last consumer ran
  (requested outputs are kept);
- the report, filled one NodeReport per node.
Policy per node: check cancellation; memory cache, then disk cache (both only for
cacheable nodes not downstream of an uncacheable one); else run it with its inputs (moved to
the run's device) and store what it returned. A node that fails or is cancelled stores nothing. With a
memory manager (runtime/memory.py), a node that runs out of device memory while model components are
resident runs once more after they are offloaded; its report entry has the transfers it caused.
Per-node work is only what the run uses: events are built only when somebody listens, and a
NodeContext only for nodes whose run() takes one."""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..graph.errors import NodeRunError, RunCancelled, SamplegraphError
from ..graph.hashing import KeyWriter
from ..graph.validate import Link, ResolvedNode, ValidGraph
from ..graph.workflow import Workflow
from ..nodes.core.context import NodeContext
from ..nodes.core.denoiser import Denoiser
from . import values as V
from .cache import CacheWriteError, DiskCache, Entry, MemoryCache
from .checkpoints import CheckpointStore
from .events import (CacheDiscarded, CacheUndecodable, CacheWriteFailed, Event, NodeFinished, NodeStarted,
                     NodeWarning, RunStarted, StepPreview, StepProgress)
from .memory import MemoryManager, Snapshot
from .preflight import fmt_bytes
from .report import NodeReport, RunReport, peak_rss_bytes


@dataclass
class RunSettings:
    device: torch.device
    seed: int
    out_dir: Path
    memory: MemoryCache | None
    disk: DiskCache | None
    emit: Callable[[Event], None] | None  # None: nobody listens, so no event is built
    is_cancelled: Callable[[], bool]
    workflow: Workflow | None = None  # the workflow as it runs: io.save_image embeds it
    residency: MemoryManager | None = None  # the Runtime's device-memory manager (runtime/memory.py), if any
    cuda: bool = field(init=False)  # asked once per run: torch.device.type costs as much as a small node

    def __post_init__(self) -> None:
        self.cuda = self.device.type == "cuda"


def compute_keys(graph: ValidGraph, order: list[str], seed: int) -> dict[str, str | None]:
    """Merkle keys of the nodes in `order` (producers come first).

    None for a node that is not cacheable, and for everything downstream of one: a side
    effect's output is not determined by its key, so nothing derived from it may be cached."""
    keys: dict[str, str | None] = {}
    writers: dict[str, KeyWriter] = {}  # one per kind in the graph
    for node_id in order:
        rn = graph.nodes[node_id]
        spec = rn.spec
        inputs = input_keys(keys, rn) if spec.cacheable else None
        if inputs is None:
            keys[node_id] = None
            continue
        if (writer := writers.get(spec.kind)) is None:
            writer = writers[spec.kind] = KeyWriter(spec.kind, spec.version)
        keys[node_id] = writer.key(rn.params.key_params(), inputs, seed if spec.uses_seed else None,
                                   rn.params.external_state())
    return keys


UNHASHED = ""  # the key of a keyed node in a run without caches: nothing reads it, so it is not computed


def cacheable_marks(graph: ValidGraph, order: list[str]) -> dict[str, str | None]:
    """compute_keys' None pattern without hashing: UNHASHED where compute_keys gives a key."""
    marks: dict[str, str | None] = {}
    for node_id in order:
        rn = graph.nodes[node_id]
        keyed = rn.spec.cacheable and all(marks[link.node] is not None for link in rn.links())
        marks[node_id] = UNHASHED if keyed else None
    return marks


def input_keys(keys: dict[str, str | None], rn: ResolvedNode) -> dict[str, str | list[str]] | None:
    """port -> "key:port" of its producer (a list for a fan-in); None when a producer has no key."""
    found: dict[str, str | list[str]] = {}
    for port, link in rn.inputs.items():
        if type(link) is list:
            many = []
            for l in link:
                if (key := keys[l.node]) is None:
                    return None
                many.append(f"{key}:{l.port}")
            found[port] = many
        elif (key := keys[link.node]) is None:
            return None
        else:
            found[port] = f"{key}:{link.port}"
    return found


def plan_keys(graph: ValidGraph, order: list[str], run: RunSettings) -> dict[str, str | None]:
    """The keys a run uses: Merkle keys when it has a cache, else only the marks (nothing reads hashes)."""
    caching = run.memory is not None or run.disk is not None
    return compute_keys(graph, order, run.seed) if caching else cacheable_marks(graph, order)


def execute(graph: ValidGraph, order: list[str], wanted: list[Link], report: RunReport,
            run: RunSettings, keys: dict[str, str | None] | None = None) -> dict[tuple[str, str], Any]:
    """Run `order` in this process; return the values of the `wanted` links. Fills `report` as it goes.

    `keys` are the plan's keys when the caller computed them (a Backend's plan), else computed here."""
    if keys is None:
        keys = plan_keys(graph, order, run)
    nodes = graph.nodes
    remaining = consumer_counts(nodes[node_id] for node_id in order)
    keep = set(wanted)
    vals: dict[tuple[str, str], Any] = {}  # (node, port) -> value; a Link is such a key
    emit, total = run.emit, len(order)
    if emit is not None:
        emit(RunStarted(total))
    peak = peak_rss_bytes()
    for index, node_id in enumerate(order):
        if run.is_cancelled():
            raise RunCancelled(f"run cancelled before node '{node_id}'")
        rn = nodes[node_id]
        if emit is not None:
            emit(NodeStarted(node_id, rn.spec.kind, index, total))
        entry = run_node(rn, keys[node_id], vals, run, peak)
        peak = entry.peak_rss_bytes
        report.nodes.append(entry)
        if emit is not None:
            emit(NodeFinished(node_id, rn.spec.kind, entry.cache, entry.wall_s))
        if rn.inputs:
            release_inputs(rn, remaining, keep, vals)
    return {(link.node, link.port): vals[link] for link in wanted}


def run_node(rn: ResolvedNode, key: str | None, vals: dict, run: RunSettings, peak: int | None = None) -> NodeReport:
    """Look the node up or compute it; its report entry. `peak`: the process's peak RSS before it, which a
    memory-cache hit (nothing allocated) keeps without asking the kernel again (a syscall per node)."""
    start = time.perf_counter()
    cuda = run.cuda
    if cuda:
        torch.cuda.reset_peak_memory_stats(run.device)
    entry, cache = lookup(rn, key, run)
    claimed = False  # this run computes the key and releases it for the runs waiting on it
    if entry is None and key is not None and run.memory is not None:
        entry, cache = claim_or_wait(rn, key, run)
        claimed = entry is None
    nfe = 0
    before = run.residency.snapshot() if run.residency is not None else None
    if entry is not None:
        outputs, metrics = entry.outputs, dict(entry.metrics)
    else:
        try:
            outputs, metrics, nfe, ctx = compute(rn, key, vals, run) if run.residency is None \
                else compute_offloading(rn, key, vals, run)
            cache = "uncached" if key is None else "miss"
            if key is not None:
                store(rn, key, outputs, metrics, run)
                if ctx is not None:
                    ctx.checkpoints.discard()
        finally:
            if claimed:
                run.memory.release(key)
    described, devices = {}, []
    for port, value in outputs.items():
        vals[(rn.id, port)] = value
        described[port] = V.report_value(value)
        if (device := V.device_of(value)) is not None and device not in devices:
            devices.append(device)
    return NodeReport(rn.id, rn.spec.kind, cache, time.perf_counter() - start, nfe,
                      ",".join(sorted(devices)) if devices else None,
                      peak if cache == "memory" and peak is not None else peak_rss_bytes(),
                      torch.cuda.max_memory_allocated(run.device) if cuda else None, described, metrics,
                      moves_since(run.residency, before))


def compute(rn: ResolvedNode, key: str | None, vals: dict, run: RunSettings
            ) -> tuple[dict[str, Any], dict[str, Any], int, NodeContext | None]:
    """Run the node on its inputs: (outputs, metrics, nfe, its NodeContext if it takes one)."""
    inputs = gather_inputs(rn, vals, run.device) if rn.inputs else {}
    if rn.spec.context_param is None:  # no NodeContext to build: nothing to count or record
        return call_node(rn, inputs, run.device), {}, 0, None
    ctx = inputs[rn.spec.context_param] = make_context(rn, run, key)
    outputs = call_node(rn, inputs, run.device)
    nfe = int(ctx.metrics.pop("nfe", 0))
    return outputs, ctx.metrics, nfe, ctx


def compute_offloading(rn: ResolvedNode, key: str | None, vals: dict, run: RunSettings
                       ) -> tuple[dict[str, Any], dict[str, Any], int, NodeContext | None]:
    """compute(), once more after offloading every managed component when the device ran out of memory with
    some resident (a node's activations need the room; what it calls moves back in when called)."""
    try:
        return compute(rn, key, vals, run)
    except NodeRunError as e:
        if not isinstance(e.__cause__, torch.OutOfMemoryError) or not (offloaded := run.residency.offload_all()):
            raise
    if run.cuda:
        torch.cuda.empty_cache()
    message = (f"out of memory on {run.device} with {', '.join(offloaded)} resident; offloaded them and ran "
               f"the node again")
    tell(run, NodeWarning(rn.id, message))
    outputs, metrics, nfe, ctx = compute(rn, key, vals, run)
    metrics.setdefault("warnings", []).append(message)
    return outputs, metrics, nfe, ctx


def moves_since(residency: MemoryManager | None, before: Snapshot | None) -> dict[str, Any] | None:
    """The memory manager's transfers during a node; None when it moved nothing (or the run has no manager)."""
    if residency is None:
        return None
    moved = residency.changes(before)
    return moved if moved["in"]["count"] or moved["out"]["count"] or moved["evictions"] else None


def lookup(rn: ResolvedNode, key: str | None, run: RunSettings) -> tuple[Entry | None, str]:
    if key is None:
        return None, "uncached"
    if run.memory is not None and (hit := run.memory.get(key)) is not None:
        return hit, "memory"
    if run.disk is not None:
        hit = run.disk.get(key, port_types_of(rn), run.device,
                           on_corrupt=lambda k, why: tell(run, CacheDiscarded(k, why)),
                           on_undecodable=lambda k, why: tell(run, CacheUndecodable(k, why)))
        if hit is not None:
            if run.memory is not None:
                run.memory.put(key, hit.outputs, hit.metrics)
            return hit, "disk"
    return None, "miss"


WAIT_POLL_S = 0.05  # how often a run waiting for another thread's result checks its cancel token


def claim_or_wait(rn: ResolvedNode, key: str, run: RunSettings) -> tuple[Entry | None, str]:
    """A missed key is computed by one thread of the Runtime at a time: (None, "miss") once this run has claimed
    it (it computes, then releases), or the entry another run computed meanwhile (its memory hit) after waiting
    for it. A run holds at most one claim, and only while it computes that node, so waits cannot cycle."""
    while (busy := run.memory.claim(key)) is not None:
        while not busy.wait(WAIT_POLL_S):
            if run.is_cancelled():
                raise RunCancelled(f"run cancelled while waiting for node '{rn.id}', which another run computes")
        if (hit := lookup(rn, key, run))[0] is not None:
            return hit  # from memory, or from disk when it was too large for memory
    if (entry := run.memory.get(key)) is not None:  # stored by a run that finished between our lookup and claim
        run.memory.release(key)
        return entry, "memory"
    return None, "miss"  # claimed; a result the other run failed to give (an error) is computed here


def tell(run: RunSettings, event: Event) -> None:
    """Emit an event when somebody listens."""
    if run.emit is not None:
        run.emit(event)


def store(rn: ResolvedNode, key: str, outputs: dict[str, Any], metrics: dict[str, Any], run: RunSettings) -> None:
    if run.memory is not None:
        run.memory.put(key, outputs, metrics)
    if run.disk is not None:
        try:
            run.disk.put(key, outputs, port_types_of(rn), metrics)
        except CacheWriteError as e:  # the result is computed and in memory: the run goes on
            tell(run, CacheWriteFailed(key, str(e)))


def port_types_of(rn: ResolvedNode) -> dict[str, type]:
    """The declared class of each output port: what the disk cache encodes and decodes by."""
    return {p.name: p.type for p in rn.spec.outputs}


def make_context(rn: ResolvedNode, run: RunSettings, key: str | None = None) -> NodeContext:
    """The node's services; checkpoints are stored only for a cached node of a run with a disk cache."""
    emit = run.emit

    def on_progress(step: int, total: int) -> None:
        emit(StepProgress(rn.id, step, total))

    def on_warning(message: str) -> None:
        emit(NodeWarning(rn.id, message))

    def on_preview(step: int, total: int, image: torch.Tensor) -> None:
        emit(StepPreview(rn.id, step, total, image))

    ctx = NodeContext(node_id=rn.id, device=run.device, out_dir=run.out_dir,
                      seed=run.seed if rn.spec.uses_seed else None,
                      on_progress=on_progress if emit is not None else None, is_cancelled=run.is_cancelled,
                      on_warning=on_warning if emit is not None else None, workflow=run.workflow,
                      residency=run.residency, on_preview=on_preview if emit is not None else None)
    if key is not None and run.disk is not None:
        ctx.checkpoints = CheckpointStore(run.disk.root).for_key(key)
    return ctx


def gather_inputs(rn: ResolvedNode, vals: dict, device: torch.device) -> dict[str, Any]:
    return {port: [to_device(vals[l], device) for l in link] if type(link) is list
            else to_device(vals[link], device) for port, link in rn.inputs.items()}


STAY = frozenset((float, int, bool, str, type(None)))  # values no device move applies to


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors and models move to the run's device when a node uses them."""
    if type(value) in STAY:
        return value
    if isinstance(value, torch.Tensor) and value.device != device:
        return value.to(device)
    if isinstance(value, Denoiser):
        return value.to(device)
    return value


def call_node(rn: ResolvedNode, inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """run() with its inputs (and NodeContext, when it takes one); every failure becomes a NodeRunError
    naming the node."""
    try:
        result = rn.params.run(**inputs)
    except (RunCancelled, NodeRunError):
        raise
    except Exception as e:
        raise node_failure(rn, e, device) from e
    return check_outputs(rn, result)


def node_failure(rn: ResolvedNode, e: Exception, device: torch.device) -> NodeRunError:
    """The NodeRunError naming the node for an exception its run raised (an allocation failure says so)."""
    if isinstance(e, SamplegraphError):  # NodeError and the other typed errors: their message as it is
        return NodeRunError(rn.id, rn.spec.kind, str(e))
    if (oom := out_of_memory(e, device)) is not None:
        return NodeRunError(rn.id, rn.spec.kind, oom)
    return NodeRunError(rn.id, rn.spec.kind, f"internal error: {type(e).__name__}: {e}")


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


def consumer_counts(nodes: Iterable[ResolvedNode]) -> dict[Link, int]:
    """How many links read each (node, port) value (a value linked twice counts twice)."""
    counts: dict[Link, int] = {}
    for rn in nodes:
        if rn.inputs:
            for link in rn.links():
                counts[link] = counts.get(link, 0) + 1
    return counts


def release_inputs(rn: ResolvedNode, remaining: dict[Link, int], keep: set[Link], vals: dict) -> None:
    """Drop the values `rn` read whose last consumer it was (the caches keep what they hold)."""
    for link in rn.links():
        remaining[link] -= 1
        if remaining[link] == 0 and link not in keep:
            vals.pop(link, None)
