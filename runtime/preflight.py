"""Checks made before a run spends any compute: the output folder and the folders of the files io nodes
will write can be written, and every node's declared memory estimate fits in what the run's device has
available."""
from __future__ import annotations

import contextlib
import os
import resource
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..graph.errors import Problem, SamplegraphError, WorkflowError
from ..graph.validate import ValidGraph
from ..nodes.core.memory import MemoryEstimate


class OutputDirError(SamplegraphError):
    """The run's output folder cannot be created or written."""


def writable_dir_problem(path: Path) -> str | None:
    """Why `path` cannot serve as a writable directory (created if missing), or None if it can."""
    if path.exists() and not path.is_dir():
        return "it exists and is not a directory"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create it ({e.strerror or e})"
    probe = path / f".probe.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        probe.write_bytes(b"")
    except OSError as e:
        return f"cannot write in it ({e.strerror or e})"
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return None


def check_out_dir(out_dir: Path) -> None:
    """Raise OutputDirError naming the folder and the reason unless results can be written there."""
    why = writable_dir_problem(Path(out_dir).expanduser())
    if why is not None:
        raise OutputDirError(f"output folder '{out_dir}' is unusable: {why}; choose a writable folder "
                             f"(--out DIR, or run(out_dir=...))")


def check_output_files(graph: ValidGraph, order: list[str], out_dir: Path) -> None:
    """Raise OutputDirError naming the node unless the folder of every file a node will write is writable."""
    for node_id, files in methods_named(graph, order, "output_files"):
        for path in files(out_dir):
            why = writable_dir_problem(path.parent)
            if why is not None:
                raise OutputDirError(f"node '{node_id}' would write '{path}', but its folder '{path.parent}' "
                                     f"is unusable: {why}; choose a writable output folder or path")


def check_memory(graph: ValidGraph, order: list[str], device: torch.device) -> None:
    """A WorkflowError locating every node whose memory estimate exceeds the device's available memory."""
    estimates: dict[str, MemoryEstimate] = {
        n: e for n, estimate in methods_named(graph, order, "memory_estimate") if (e := estimate()) is not None}
    if not estimates:
        return
    free = available_bytes(device)
    if free is None:
        return
    problems = [Problem(f"needs about {fmt_bytes(e.nbytes)} ({e.what}), but only {fmt_bytes(free)} of "
                        f"{device.type.upper()} memory is available", node=n, where=f"param '{e.params[0]}'",
                        hint="lower " + " or ".join(f"'{p}'" for p in e.params))
                for n, e in estimates.items() if e.nbytes > free]
    if problems:
        raise WorkflowError(problems)


def methods_named(graph: ValidGraph, order: list[str], name: str) -> Iterator[tuple[str, Callable[..., Any]]]:
    """(node id, bound method) of the nodes in `order` whose class defines the method `name`; each class
    is asked once (a missing attribute costs a raised AttributeError inside pydantic per instance)."""
    defines: dict[type, bool] = {}
    for node_id in order:
        params = graph.nodes[node_id].params
        found = defines.get(type(params))
        if found is None:
            found = defines[type(params)] = callable(getattr(type(params), name, None))
        if found:
            yield node_id, getattr(params, name)


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can get on `device` now (CUDA: free device memory; CPU: the least of
    MemAvailable, the cgroup's headroom and the address-space limit's headroom), None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    limits = [x for x in (meminfo_available(), cgroup_headroom(), address_space_headroom()) if x is not None]
    return min(limits) if limits else None


def meminfo_available() -> int | None:
    return read_kib_field(Path("/proc/meminfo"), "MemAvailable:")


def cgroup_headroom() -> int | None:
    """limit - usage of this process's memory cgroup (v2, else v1), None without a limit."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap, used = Path(limit).read_text().strip(), int(Path(usage).read_text())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 1 << 60:  # v1 reports "no limit" as a huge number
            return max(int(cap) - used, 0)
    return None


def address_space_headroom() -> int | None:
    """RLIMIT_AS minus the current virtual size (`ulimit -v`), None when unlimited."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    size = read_kib_field(Path("/proc/self/status"), "VmSize:")
    return max(soft - (size or 0), 0)


def read_kib_field(path: Path, field: str) -> int | None:
    """A '<field> <n> kB' line of a /proc file, in bytes."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def fmt_bytes(n: float, binary: bool = False) -> str:
    """'1.5 GB' (powers of 1000), or '1.4 GiB' (powers of 1024) when `binary`."""
    base, units = (1024, ("B", "KiB", "MiB", "GiB", "TiB")) if binary else (1000, ("B", "KB", "MB", "GB", "TB"))
    i = 0
    while n >= base and i < len(units) - 1:
        n, i = n / base, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"


def preflight(graph: ValidGraph, order: list[str], device: torch.device, out_dir: Path | None) -> None:
    """Every check that can fail a run before it computes anything."""
    if out_dir is not None:
        check_out_dir(Path(out_dir))
    check_output_files(graph, order, Path(out_dir) if out_dir is not None else Path("."))
    check_memory(graph, order, device)
