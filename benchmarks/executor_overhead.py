"""Executor overhead per node: a chain of N trivial nodes and a W-wide fan-in, against
dask's synchronous scheduler on the same task graphs, in the same process.

    python benchmarks/executor_overhead.py [--sizes 1000 2000 5000 10000] [--fan-in 100 1000] [--repeat 7]

Every round of a case calls, one after the other, samplegraph without caches, its validation
alone, samplegraph with every node a memory-cache hit, and dask's `get_sync`, so load on a
shared machine falls on all of them alike; cells are "median (min)" over `--repeat` rounds and
the ratios (samplegraph / dask; below 1 is faster) are taken round by round. The heap is
collected before each call, and the collector stays on during it. samplegraph's time
is end to end: validation, pruning, cache keys, preflight, execution and the run report.
dask's fan-in constants are literal data (dask never calls anything for them) while every
samplegraph constant is a node that is validated, keyed, run and reported.
The per-node cost must stay flat as N grows (no O(N^2) in validation, keys, ordering or the report).

No ComfyUI row: its execution engine comes only with the whole application, whose repository
snapshot (1.19 GB) is larger than the fetch limit of the sandbox this benchmark was written in,
so its engine could not be fetched and driven headless on trivial nodes there."""
from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

import torch

from samplegraph import Node, Registry, Runtime, Workflow, node

from common import table


@node("bench.const")
class Const(Node):
    """A constant float."""

    value: float = 0.0

    def run(self) -> float:
        return self.value


@node("bench.inc")
class Inc(Node):
    """x + 1."""

    def run(self, x: float) -> float:
        return x + 1.0


@node("bench.sum")
class Sum(Node):
    """Sum of a fan-in of floats."""

    def run(self, xs: list[float]) -> float:
        return sum(xs)


def chain(n: int) -> Workflow:
    nodes = {"n0": {"kind": "bench.const"}}
    nodes.update({f"n{i}": {"kind": "bench.inc", "inputs": {"x": f"n{i - 1}"}} for i in range(1, n)})
    return Workflow.from_dict({"nodes": nodes, "outputs": [f"n{n - 1}"]})


def fan_in(w: int) -> Workflow:
    nodes = {f"c{i}": {"kind": "bench.const", "params": {"value": float(i)}} for i in range(w)}
    nodes["total"] = {"kind": "bench.sum", "inputs": {"xs": [f"c{i}" for i in range(w)]}}
    return Workflow.from_dict({"nodes": nodes, "outputs": ["total"]})


def dask_chain(n: int) -> dict:
    graph = {"n0": 0.0}
    graph.update({f"n{i}": (inc, f"n{i - 1}") for i in range(1, n)})
    return graph


def dask_fan_in(w: int) -> dict:
    graph = {f"c{i}": float(i) for i in range(w)}
    graph["total"] = (sum, [f"c{i}" for i in range(w)])
    return graph


def inc(x: float) -> float:
    return x + 1.0


def seconds(fn: Callable[[], object]) -> float:
    """Wall time of one call, started from a collected heap (no contender pays for another's garbage)."""
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cell(samples: list[float], scale: float = 1.0) -> str:
    """'median (min)' of scaled samples."""
    return f"{statistics.median(samples) * scale:.3g} ({min(samples) * scale:.3g})"


def measure(registry: Registry, wf: Workflow, dgraph: dict, out: str, repeat: int,
            get_sync: Callable | None) -> dict[str, list[float]]:
    """Seconds per call of each contender, `repeat` interleaved rounds (after one warm-up round)."""
    cold = Runtime(registry=registry, device="cpu", cache=False)
    cached = Runtime(registry=registry, device="cpu")
    contenders = {"run": lambda: cold.run(wf), "validate": lambda: cold.validate(wf),
                  "hits": lambda: cached.run(wf)}
    if get_sync is not None:
        contenders["dask"] = lambda: get_sync(dgraph, out)
    for fn in contenders.values():  # warm-up; fills the memory cache of `cached`
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            times[name].append(seconds(fn))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    ap.add_argument("--fan-in", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--repeat", type=int, default=7, help="interleaved rounds per case (median and min)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    registry = Registry([Const, Inc, Sum])
    try:
        from dask.local import get_sync
    except ImportError:
        get_sync = None
    rows = []
    cases = [("chain", n, chain(n), dask_chain(n), f"n{n - 1}") for n in args.sizes]
    cases += [("fan-in", w + 1, fan_in(w), dask_fan_in(w), "total") for w in args.fan_in]
    for shape, size, wf, dgraph, out in cases:
        t = measure(registry, wf, dgraph, out, args.repeat, get_sync)
        us = 1e6 / size
        nan = [float("nan")]
        dask = t.get("dask", nan * args.repeat)
        rows.append([shape, size, cell(t["run"], us), cell(t["validate"], us), cell(t["hits"], us), cell(dask, us),
                     cell([a / b for a, b in zip(t["run"], dask)]), cell([a / b for a, b in zip(t["hits"], dask)])])
    print(table(["graph", "nodes", "samplegraph µs/node (no cache)", "of which validation µs/node",
                 "samplegraph µs/node (all memory hits)", "dask get_sync µs/task",
                 "samplegraph/dask (no cache)", "samplegraph/dask (memory hits)"], rows))
    print(f"\nmedian (min) of {args.repeat} interleaved rounds; torch threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
