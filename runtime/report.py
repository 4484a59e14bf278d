"""Run reports: per node wall time, cache hit/miss, NFE, peak memory, device; saved as JSON."""
from __future__ import annotations

import json
import math
import platform
import resource
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass(slots=True)  # one per node: no per-instance __dict__ for the collector to walk
class NodeReport:
    node: str
    kind: str
    cache: str  # "memory" | "disk" | "miss" | "uncached" (not cacheable: side effects)
    wall_s: float
    nfe: int = 0
    device: str | None = None
    peak_rss_bytes: int = 0  # process peak resident set after this node (CPU memory high-water mark)
    peak_cuda_bytes: int | None = None  # peak CUDA allocation during this node, when on CUDA
    outputs: dict[str, Any] = field(default_factory=dict)  # numbers as numbers, other values described
    metrics: dict[str, Any] = field(default_factory=dict)
    transfers: dict[str, Any] | None = None  # the memory manager's module moves during this node; None: none


@dataclass
class RunReport:
    seed: int
    device: str
    source: str | None = None
    wall_s: float = 0.0
    status: str = "running"  # "ok" | "cancelled" | "failed"
    nodes: list[NodeReport] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)  # numbers as numbers, other values described
    memory: dict[str, Any] | None = None  # the memory manager's budget, components and transfers (runtime/memory.py)
    environment: dict[str, str] = field(default_factory=lambda: {
        "python": sys.version.split()[0], "torch": torch.__version__, "platform": platform.platform(),
        "torch_threads": str(torch.get_num_threads())})  # intra-op threads of the thread that runs the workflow

    @property
    def nfe(self) -> int:
        return sum(n.nfe for n in self.nodes)

    def node(self, node_id: str) -> NodeReport:
        return next(n for n in self.nodes if n.node == node_id)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["nfe"] = self.nfe
        return d

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(json_safe(self.to_dict()), indent=2, allow_nan=False, default=str))
        return path


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats (NaN and infinities have no strict-JSON form) written as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


RSS_UNIT = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB on Linux


def peak_rss_bytes() -> int:
    """Process peak resident set size in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RSS_UNIT
