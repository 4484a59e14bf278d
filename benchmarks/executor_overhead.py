"""Executor overhead per node: a chain of N trivial nodes and a W-wide fan-in, against
dask's synchronous scheduler on the same task graphs and a plain Python loop.

    python benchmarks/executor_overhead.py [--sizes 1000 2000 5000 10000] [--repeat 5]

Times are medians of `--repeat` calls, each samplegraph case measured next to dask on the same
shape, so the ratio columns (samplegraph / dask; below 1 is faster) survive a busy machine.
The per-node cost must stay flat as N grows (no O(N^2) in keys, ordering or progress)."""
from __future__ import annotations

import argparse

from samplegraph import Node, Registry, Runtime, Workflow, node

from common import median_of, table


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    ap.add_argument("--fan-in", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--repeat", type=int, default=5, help="calls per measurement (median)")
    args = ap.parse_args()
    registry = Registry([Const, Inc, Sum])
    try:
        from dask.local import get_sync
    except ImportError:
        get_sync = None
    rows = []
    cases = [("chain", n, chain(n), dask_chain(n), f"n{n - 1}") for n in args.sizes]
    cases += [("fan-in", w + 1, fan_in(w), dask_fan_in(w), "total") for w in args.fan_in]
    for shape, size, wf, dgraph, out in cases:
        cold = Runtime(registry=registry, device="cpu", cache=False)
        t_run = median_of(lambda: cold.run(wf), args.repeat)
        t_val = median_of(lambda: cold.validate(wf), args.repeat)
        cached = Runtime(registry=registry, device="cpu")
        cached.run(wf)
        t_hit = median_of(lambda: cached.run(wf), args.repeat)
        t_dask = median_of(lambda: get_sync(dgraph, out), args.repeat) if get_sync else float("nan")
        us = 1e6 / size
        rows.append([shape, size, t_run * us, t_val * us, t_hit * us, t_dask * us, t_run / t_dask,
                     t_hit / t_dask])
    print(table(["graph", "nodes", "samplegraph µs/node (no cache)", "of which validation µs/node",
                 "samplegraph µs/node (all memory hits)", "dask get_sync µs/task",
                 "samplegraph/dask (no cache)", "samplegraph/dask (memory hits)"], rows))


if __name__ == "__main__":
    main()
