"""The embedding API: `Runtime(device=..., cache_dir=..., vram_budget=...)`, `runtime.run(workflow, ...)`.

A Runtime owns a node registry and the caches; every run keeps its own state, so one
Runtime serves several threads at once (the caches lock; disk writes are atomic)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..graph.errors import Problem, RunCancelled, SamplegraphError, WorkflowError
from ..graph.validate import Link, ValidGraph, execution_order, resolve_port, validate, validate_document
from ..graph.workflow import Workflow, parse_link
from ..nodes.api import Node, Registry
from .backends import Backend, LocalBackend
from .cache import DiskCache, MemoryCache
from .devices import resolve_device
from .events import Event, RunFinished
from .executor import RunSettings, plan_keys
from .memory import MemoryManager, Snapshot, parse_bytes
from .preflight import preflight
from .report import RunReport


class CancelToken:
    """Cancel a run from another thread: `token.cancel()`; checked between nodes and steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class RunResult:
    """Requested outputs by name ("node" or "node.port") and the run report."""

    outputs: dict[str, Any]
    report: RunReport
    report_path: Path | None = None

    def __getitem__(self, name: str) -> Any:
        return self.outputs[name]


class Runtime:
    """Runs workflows: validation, pruning, caching (memory + optional disk), devices, events;
    `backend` decides where the nodes run (default: `LocalBackend`, this process)."""

    def __init__(self, device: str | torch.device = "auto", cache_dir: str | Path | None = None,
                 memory_cache_bytes: int = 2 << 30, disk_cache_bytes: int = 10 << 30,
                 registry: Registry | None = None, nodes: Iterable[type[Node]] = (),
                 cache: bool = True, backend: Backend | None = None, vram_budget: int | str | None = None):
        self.backend = backend if backend is not None else LocalBackend()  # where nodes run (runtime/backends)
        self.device = resolve_device(device)
        budget = parse_bytes(vram_budget, "vram_budget") if vram_budget is not None else None
        # on a GPU (or under a budget, which a CPU run checks without moving anything) pipelines' modules
        # are managed: offloaded to the CPU and moved to the device when used (runtime/memory.py)
        self.residency = (MemoryManager(self.device, budget) if self.device.type != "cpu" or budget is not None
                          else None)
        base = registry if registry is not None else Registry.default()
        self.registry = base.extended(nodes) if nodes else base
        self.memory = MemoryCache(memory_cache_bytes) if cache else None
        self.disk = DiskCache(cache_dir, disk_cache_bytes) if (cache and cache_dir is not None) else None

    def load(self, wf: Workflow | str | Path | dict) -> tuple[Workflow, str | None]:
        """The workflow and its source path; a structurally broken document is reported together
        with the problems of its well-formed nodes (all at once)."""
        try:
            return as_workflow(wf)
        except WorkflowError as e:
            raise validate_document(e, self.registry.specs) from None

    def validate(self, wf: Workflow, source: str | None = None) -> ValidGraph:
        """All problems at once as a WorkflowError, or the validated graph."""
        return validate(wf, self.registry.specs, source)

    def run(self, wf: Workflow | str | Path | dict, outputs: list[str] | None = None,
            overrides: dict[str, Any] | None = None, on_event: Callable[[Event], None] | None = None,
            cancel: CancelToken | None = None, out_dir: str | Path | None = None,
            seed: int | None = None) -> RunResult:
        """Validate, prune to `outputs` (default: the workflow's), run, and report.

        The report is saved as `report.json` in `out_dir` when one is given; output nodes' relative paths resolve
        against `out_dir`, or against the current directory when none is given (as open() would)."""
        wf, source = self.load(wf)
        if overrides:
            wf = wf.with_overrides(overrides)
        if seed is not None:
            wf = Workflow.from_dict({**wf.model_dump(mode="json"), "seed": seed}, source)  # validated like a file's
        graph = self.validate(wf, source)
        names = outputs if outputs is not None else list(wf.outputs)
        order = execution_order(graph, names)
        wanted = resolve_wanted(graph, names)
        preflight(graph, order, self.device, Path(out_dir) if out_dir is not None else None)
        report = RunReport(seed=wf.seed, device=str(self.device), source=source)
        settings = RunSettings(device=self.device, seed=wf.seed, out_dir=Path(out_dir or "."),
                               memory=self.memory, disk=self.disk, emit=on_event,
                               is_cancelled=(lambda: cancel.cancelled) if cancel else (lambda: False),
                               workflow=wf, residency=self.residency)
        start = time.perf_counter()
        moved = self.residency.snapshot() if self.residency is not None else None
        try:
            produced = self.backend.execute(graph, order, plan_keys(graph, order, settings), wanted, report,
                                            settings)
            report.status = "ok"
        except (RunCancelled, KeyboardInterrupt):
            report.memory = self.memory_report(moved)
            save_partial(report, "cancelled", start, out_dir)
            raise
        except SamplegraphError:
            report.memory = self.memory_report(moved)
            save_partial(report, "failed", start, out_dir)
            raise
        report.memory = self.memory_report(moved)
        report.wall_s = time.perf_counter() - start
        results = {name: produced[(link.node, link.port)] for name, link in zip(names, wanted)}
        report.outputs = {name: describe_output(v) for name, v in results.items()}
        path = report.save(Path(out_dir) / "report.json") if out_dir is not None else None
        if on_event is not None:
            on_event(RunFinished(report))
        return RunResult(results, report, path)

    def memory_report(self, since: Snapshot | None) -> dict[str, Any] | None:
        """The report's "memory" section: the manager's state and its transfers since `since`."""
        return self.residency.report(since) if self.residency is not None and since is not None else None


def save_partial(report: RunReport, status: str, start: float, out_dir: str | Path | None) -> None:
    """Mark a run that stopped early and save its report (the nodes that finished) when out_dir is given."""
    report.status = status
    report.wall_s = time.perf_counter() - start
    if out_dir is not None:
        try:
            report.save(Path(out_dir) / "report.json")
        except OSError:  # the run's own error is the one to show
            pass


def as_workflow(wf: Workflow | str | Path | dict) -> tuple[Workflow, str | None]:
    if isinstance(wf, Workflow):
        return wf, None
    if isinstance(wf, dict):
        return Workflow.from_dict(wf), None
    return Workflow.load(wf), str(wf)


def resolve_wanted(graph: ValidGraph, names: list[str]) -> list[Link]:
    """The output port each requested name means (validated like a link)."""
    problems: list[Problem] = []
    links = []
    for name in names:
        node_id, port = parse_link(name)
        found = resolve_port(graph.nodes[node_id].spec, node_id, port, f"output '{name}'", problems, node=None)
        if found is not None:
            links.append(Link(node_id, found.name))
    if problems:
        raise WorkflowError(problems)
    return links


def describe_output(value: Any) -> bool | int | float | str:
    from .values import report_value

    return report_value(value)
