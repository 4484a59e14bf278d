"""RayBackend: a run's nodes as Ray tasks; `sample` batches split over model-resident ModelWorker actors.

The driver (Runtime.run) has computed every Merkle key before `execute` is called. The backend keeps
`{key: (outputs ref, report ref)}` for as long as it lives, so a node whose key was submitted by an
earlier run (or an earlier point of a sweep) is not submitted again: shared prefixes run once. Each task
runs the node through the executor's own `run_node` with the shared disk cache (read first, written
after), so a worker on another process or machine that shares the cache folder reuses its entries.
Nodes without a key (side effects: io.save_*, plots) run in the driver, where their files belong.

Only this module imports ray; the runtime imports it when a RayBackend is asked for."""
from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
import torch

from ...graph.errors import RunCancelled, SamplegraphError
from ...graph.validate import Link, ResolvedNode, ValidGraph
from ..cache import DiskCache
from ..events import NodeFinished, NodeStarted, RunStarted
from ..executor import UNHASHED, RunSettings, compute_keys, run_node
from ..report import NodeReport, RunReport
from .base import Backend
from .model_worker import ModelWorker, split_sample_task, task_cancelled
from .split_denoiser import split_inputs, split_ports, split_report

TASK_RETRIES = 3  # a task whose worker process dies is re-run (nodes are pure functions of their inputs)
CANCEL_POLL_S = 0.05  # how often the driver, waiting for a task, looks at the run's CancelToken


def start_ray(address: str | None, num_cpus: int | None, num_gpus: int | None,
              object_store_bytes: int | None) -> None:
    """Connect to `address` ('auto', host:port) or start a local cluster (no dashboard); once per process."""
    if ray.is_initialized():
        return
    common: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address is not None:
        ray.init(address=address, **common)
    else:
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, object_store_memory=object_store_bytes, **common)


_DISKS: dict[str, DiskCache] = {}  # per worker process: one open DiskCache per root


def worker_disk(root: str | None, max_bytes: int) -> DiskCache | None:
    if root is None:
        return None
    if root not in _DISKS:
        _DISKS[root] = DiskCache(root, max_bytes)
    return _DISKS[root]


def worker_settings(device: str, seed: int, out_dir: str, disk_root: str | None, disk_bytes: int) -> RunSettings:
    """What a node run needs inside a task: no memory cache (the driver's ref table is one), the shared disk."""
    return RunSettings(device=torch.device(device), seed=seed, out_dir=Path(out_dir), memory=None,
                       disk=worker_disk(disk_root, disk_bytes), emit=None, is_cancelled=task_cancelled)


def node_task(rn: ResolvedNode, key: str, settings: tuple, links: list[Link], *inputs: Any,
              split: tuple[list[Any], dict[str, str]] | None = None) -> tuple[dict[str, Any], NodeReport]:
    """One node, with its producers' output dicts as `inputs` (one per entry of `links`). `split` (the
    ModelWorkers, {Denoiser input port: model key}): a search strategy whose denoiser calls the workers make."""
    vals = {(link.node, link.port): produced[link.port] for link, produced in zip(links, inputs)}
    made = split_inputs(rn, vals, *split) if split is not None else []
    entry = run_node(rn, key, vals, worker_settings(*settings))
    if made:
        entry = split_report(entry, made, len(split[0]))
    return {p.name: vals[(rn.id, p.name)] for p in rn.spec.outputs}, entry


remote_node = ray.remote(num_returns=2, max_retries=TASK_RETRIES, retry_exceptions=False)(node_task)


class RayBackend(Backend):
    """Nodes as Ray tasks on a cluster (`address`: None starts a local one, 'auto', or host:port).

    `model_workers` > 0 starts that many ModelWorker actors (each `gpus_per_worker` GPUs, no CPU held);
    a `sample` node's batch is then split across them, each keeping the model resident, and so are the
    denoiser calls of the search strategies (search.*: the strategy runs in one task, see split_denoiser.py).
    A run whose CancelToken is set while it waits cancels the tasks it submitted (ray.cancel) and raises
    RunCancelled."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
                 model_workers: int = 0, gpus_per_worker: float = 1.0, object_store_bytes: int | None = None,
                 max_restarts: int = 3, max_task_retries: int = 3):
        start_ray(address, num_cpus, num_gpus, object_store_bytes)
        self.workers = [ModelWorker.options(num_cpus=0, num_gpus=gpus_per_worker, max_restarts=max_restarts,
                                            max_task_retries=max_task_retries).remote()
                        for _ in range(model_workers)]
        self._refs: dict[str, tuple[ray.ObjectRef, ray.ObjectRef]] = {}  # key -> (outputs, NodeReport)
        self._lock = threading.Lock()  # sweep points run in threads and share the table

    def execute(self, graph: ValidGraph, order: list[str], keys: dict[str, str | None], wanted: list[Link],
                report: RunReport, run: RunSettings) -> dict[tuple[str, str], Any]:
        if UNHASHED in keys.values():  # a cache-less runtime skips hashing; sharing work needs the keys
            keys = compute_keys(graph, order, run.seed)
        refs, mine = self.submit(graph, order, keys, run)
        return self.collect(graph, order, keys, wanted, report, run, refs, mine)

    def submit(self, graph: ValidGraph, order: list[str], keys: dict[str, str | None], run: RunSettings
               ) -> tuple[dict[str, tuple[ray.ObjectRef, ray.ObjectRef]], set[str]]:
        """Submit every keyed node not submitted before (producers first: refs chain them)."""
        settings = (str(run.device), run.seed, str(run.out_dir),
                    str(run.disk.root) if run.disk is not None else None,
                    run.disk.max_bytes if run.disk is not None else 0)
        refs, mine = {}, set()
        for node_id in order:
            if run.is_cancelled():
                raise RunCancelled(f"run cancelled before node '{node_id}'")
            key, rn = keys[node_id], graph.nodes[node_id]
            if key is None:
                continue
            with self._lock:
                if key not in self._refs:
                    self._refs[key] = self.submit_node(rn, key, keys, settings, refs)
                    mine.add(node_id)
            refs[node_id] = self._refs[key]
        return refs, mine

    def submit_node(self, rn: ResolvedNode, key: str, keys: dict[str, str | None], settings: tuple,
                    refs: dict[str, tuple[ray.ObjectRef, ray.ObjectRef]]) -> tuple[ray.ObjectRef, ray.ObjectRef]:
        links = list(rn.links())
        inputs = [refs[link.node][0] for link in links]
        if self.workers and rn.spec.kind == "sample":
            model_key = keys[rn.inputs["denoise"].node]
            return split_sample_task.remote(rn, key, settings, links, self.workers, model_key, *inputs)
        if self.workers and (ports := split_ports(rn)):
            model_keys = {port: f"{keys[rn.inputs[port].node]}:{rn.inputs[port].port}" for port in ports}
            return remote_node.remote(rn, key, settings, links, *inputs, split=(self.workers, model_keys))
        return remote_node.remote(rn, key, settings, links, *inputs)

    def collect(self, graph: ValidGraph, order: list[str], keys: dict[str, str | None], wanted: list[Link],
                report: RunReport, run: RunSettings, refs: dict, mine: set[str]) -> dict[tuple[str, str], Any]:
        """Report every node in order; fetch only the values the driver needs (side-effect nodes' inputs,
        the wanted outputs); run the side-effect nodes here."""
        emit, nodes = run.emit, graph.nodes
        needed = {link for node_id in order if keys[node_id] is None for link in nodes[node_id].links()} | set(wanted)
        vals: dict[tuple[str, str], Any] = {}
        if emit is not None:
            emit(RunStarted(len(order)))
        for index, node_id in enumerate(order):
            rn = nodes[node_id]
            if emit is not None:
                emit(NodeStarted(node_id, rn.spec.kind, index, len(order)))
            if keys[node_id] is None:
                if run.is_cancelled():
                    raise RunCancelled(f"run cancelled before node '{node_id}'")
                entry = run_node(rn, None, vals, run)
            else:
                out_ref, entry_ref = refs[node_id]
                entry = self.report_of(keys[node_id], self.wait(node_id, entry_ref, run, keys, refs, mine))
                if node_id not in mine:  # another run submitted this key: its work is shared, not redone
                    entry = replace(entry, cache="memory", wall_s=0.0, nfe=0)
                if any(link.node == node_id for link in needed):
                    outputs = ray.get(out_ref)
                    vals.update({(node_id, port): v for port, v in outputs.items() if Link(node_id, port) in needed})
            report.nodes.append(entry)
            if emit is not None:
                emit(NodeFinished(node_id, rn.spec.kind, entry.cache, entry.wall_s))
        return {(link.node, link.port): vals[link] for link in wanted}

    def wait(self, node_id: str, ref: ray.ObjectRef, run: RunSettings, keys: dict[str, str | None],
             refs: dict[str, tuple[ray.ObjectRef, ray.ObjectRef]], mine: set[str]) -> ray.ObjectRef:
        """`ref` once its task has finished; if the run is cancelled meanwhile, cancel this run's tasks first."""
        while not ray.wait([ref], timeout=CANCEL_POLL_S)[0]:
            if run.is_cancelled():
                self.cancel(keys, refs, mine)
                raise RunCancelled(f"run cancelled during node '{node_id}'")
        return ref

    def cancel(self, keys: dict[str, str | None], refs: dict[str, tuple[ray.ObjectRef, ray.ObjectRef]],
               mine: set[str]) -> None:
        """ray.cancel every unfinished task this run submitted (recursively: a split node's worker calls too, which
        stop at their next step) and forget their keys, so a later run submits them again."""
        for node_id in mine:
            out_ref = refs[node_id][0]
            if ray.wait([out_ref], timeout=0)[0]:
                continue  # finished: a sound result, kept for later runs
            with self._lock:
                if self._refs.get(keys[node_id], (None,))[0] == out_ref:
                    self._refs.pop(keys[node_id])
            ray.cancel(out_ref, recursive=True)

    def report_of(self, key: str, entry_ref: ray.ObjectRef) -> NodeReport:
        """The task's NodeReport; a failed node is forgotten (a later run tries it again) and its own typed
        error (NodeRunError naming the node) is raised, not Ray's wrapper."""
        try:
            return ray.get(entry_ref)
        except ray.exceptions.RayTaskError as e:
            with self._lock:
                self._refs.pop(key, None)
            raise (e.cause if isinstance(e.cause, SamplegraphError) else e) from None

    def forget(self) -> None:
        """Drop the driver's table of submitted keys (their objects leave the object store)."""
        with self._lock:
            self._refs.clear()

    def close(self) -> None:
        self.forget()
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []


def worker_pids(backend: RayBackend) -> list[int]:
    """The process id of each ModelWorker (tests kill one mid-call)."""
    return ray.get([w.pid.remote() for w in backend.workers])

