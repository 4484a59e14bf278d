"""Executor overhead per node: a chain of N trivial nodes and a W-wide fan-in, against
dask's synchronous scheduler on the same task graphs, in the same process.

    python benchmarks/executor_overhead.py [--sizes 1000 2000 5000 10000] [--fan-in 100 1000] [--repeat 7]
    COMFYUI_DIR=... COMFYUI_PYTHON=... python benchmarks/executor_overhead.py  # adds ComfyUI's columns

Every round of a case calls, one after the other, samplegraph without caches, its validation
alone, samplegraph with every node a memory-cache hit, and dask's `get_sync`, so load on a
shared machine falls on all of them alike; cells are "median (min)" over `--repeat` rounds and
the ratios (samplegraph / dask; below 1 is faster) are taken round by round. The heap is
collected before each call, and the collector stays on during it. samplegraph's time
is end to end: validation, pruning, cache keys, preflight, execution and the run report.
dask's fan-in constants are literal data (dask never calls anything for them) while every
samplegraph constant is a node that is validated, keyed, run and reported.
The per-node cost must stay flat as N grows (no O(N^2) in validation, keys, ordering or the report).

With COMFYUI_DIR / COMFYUI_PYTHON (/ COMFYUI_PYTHONPATH) naming a ComfyUI checkout and its interpreter, as for
benchmarks/serve.py, ComfyUI's own engine runs the same shapes in its own process
(benchmarks/comfyui_executor_driver.py, driven by benchmarks/comfyui_engine.py): our trivial nodes in its V1
custom-node format (a chain's last increment and the fan-in's sum are its OUTPUT_NODEs), each call its
`validate_prompt` plus `PromptExecutor.execute`, timed inside that process, one round of it after each round of
the others. Its modes: "no cache" is --cache-none (CacheType.NONE), "new executor" its default cache
(CLASSIC) on a new executor (every node runs and is keyed), "all hits" one executor re-running the identical
prompt; its ratios are to samplegraph's no-cache and memory-hit calls of the same round. Its costs grow with N
per node (O(N^2) a graph: the progress handler builds a dict over all the prompt's nodes at each node's start
and finish; the default cache keys each node by its whole ancestry; the scheduler
scans every ready node at each pick), so cases over --comfyui-max-nodes are skipped; and its validation
recurses once per link, so as shipped it refuses a chain of about 1000 nodes (RecursionError): the driver
raises the recursion limit. Without the variables its columns say "not installed" and the footer line how to add them."""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable

import torch

from samplegraph import Node, Registry, Runtime, Workflow, node

from comfyui_engine import ComfyUIEngine, start_engine
from comfyui_server import ComfyUIError
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
            get_sync: Callable | None, comfy: Callable[[int], dict[str, list[float]]] | None = None,
            ) -> dict[str, list[float]]:
    """Seconds per call of each contender, `repeat` interleaved rounds (after one warm-up round); `comfy(rounds)`
    runs that many rounds of ComfyUI's modes in its own process (0: build and warm up), keys "comfy_" + mode."""
    cold = Runtime(registry=registry, device="cpu", cache=False)
    cached = Runtime(registry=registry, device="cpu")
    contenders = {"run": lambda: cold.run(wf), "validate": lambda: cold.validate(wf),
                  "hits": lambda: cached.run(wf)}
    if get_sync is not None:
        contenders["dask"] = lambda: get_sync(dgraph, out)
    for fn in contenders.values():  # warm-up; fills the memory cache of `cached`
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    if comfy is not None:
        comfy(0)
    for _ in range(repeat):
        for name, fn in contenders.items():
            times[name].append(seconds(fn))
        for mode, samples in (comfy(1) if comfy is not None else {}).items():
            times.setdefault(f"comfy_{mode}", []).extend(samples)
    return times


def comfy_cells(t: dict[str, list[float]], us: float, skip: str | None) -> list[str]:
    """ComfyUI's cells of a row (as COMFY_HEADERS), or `skip` and dashes."""
    if skip is not None:
        return [skip] + ["-"] * (len(COMFY_HEADERS) - 1)
    return [cell(t["comfy_none"], us), cell(t["comfy_validate"], us), cell(t["comfy_run"], us),
            cell(t["comfy_hits"], us), cell([a / b for a, b in zip(t["comfy_none"], t["run"])]),
            cell([a / b for a, b in zip(t["comfy_hits"], t["hits"])])]


def one_line(text: str, limit: int = 300) -> str:
    """`text` fit for a table cell: one line, no column bars, at most `limit` characters."""
    return " ".join(text.split()).replace("|", "/")[:limit]


COMFY_HEADERS = ["ComfyUI µs/node (no cache)", "of which validation µs/node", "ComfyUI µs/node (new executor)",
                 "ComfyUI µs/node (all hits)", "ComfyUI/samplegraph (no cache)", "ComfyUI/samplegraph (hits)"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    ap.add_argument("--fan-in", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--repeat", type=int, default=7, help="interleaved rounds per case (median and min)")
    ap.add_argument("--comfyui-max-nodes", type=int, default=1001,
                    help="larger cases skip ComfyUI (O(N^2): with its default cache a 2000-chain takes ~50 s a "
                         "call, 5000 ~6 min)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    registry = Registry([Const, Inc, Sum])
    try:
        from dask.local import get_sync
    except ImportError:
        get_sync = None
    engine = start_engine(os.environ)
    try:
        rows = run_cases(args, registry, get_sync, engine)
    finally:
        if isinstance(engine, ComfyUIEngine):
            engine.close()
    comfy = (f"ComfyUI {engine.install.version()}" + (" (torchvision placeholder)" * engine.torchvision_placeholder)
             if isinstance(engine, ComfyUIEngine) else one_line(f"ComfyUI: {engine}", 2000))
    print(table(["graph", "nodes", "samplegraph µs/node (no cache)", "of which validation µs/node",
                 "samplegraph µs/node (all memory hits)", "dask get_sync µs/task",
                 "samplegraph/dask (no cache)", "samplegraph/dask (memory hits)", *COMFY_HEADERS], rows))
    print(f"\nmedian (min) of {args.repeat} interleaved rounds; torch threads: {torch.get_num_threads()}; {comfy}")


def run_cases(args: argparse.Namespace, registry: Registry, get_sync: Callable | None,
              engine: ComfyUIEngine | str) -> list[list[object]]:
    """One table row per case: samplegraph, dask and (where `engine` is one and the case is small enough)
    ComfyUI."""
    rows = []
    cases = [("chain", n, chain(n), dask_chain(n), f"n{n - 1}") for n in args.sizes]
    cases += [("fan-in", w + 1, fan_in(w), dask_fan_in(w), "total") for w in args.fan_in]
    for shape, size, wf, dgraph, out in cases:
        skip = engine if isinstance(engine, str) else None
        if skip is None and size > args.comfyui_max_nodes:
            skip = "skipped: over --comfyui-max-nodes"
        comfy = None if skip else (lambda rounds, s=shape, n=size: engine.rounds(s, n, rounds))
        try:
            t = measure(registry, wf, dgraph, out, args.repeat, get_sync, comfy)
        except ComfyUIError as e:  # the case again without it; its cells say why
            skip = one_line(f"failed: {e}")
            t = measure(registry, wf, dgraph, out, args.repeat, get_sync)
        us = 1e6 / size
        nan = [float("nan")]
        dask = t.get("dask", nan * args.repeat)
        rows.append([shape, size, cell(t["run"], us), cell(t["validate"], us), cell(t["hits"], us), cell(dask, us),
                     cell([a / b for a, b in zip(t["run"], dask)]), cell([a / b for a, b in zip(t["hits"], dask)]),
                     *comfy_cells(t, us, engine.split(":")[0] if isinstance(engine, str) else skip)])
    return rows


if __name__ == "__main__":
    main()
