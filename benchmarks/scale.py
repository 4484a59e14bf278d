"""Scale-out on Ray: a sweep, an SMC sweep, one split `sample` batch and single SMC runs whose denoiser calls are
split (on the ring GMM, and on the digits network) on 1 vs 2 Ray workers, against
the local backend and against Ray's own empty-task latency measured in the same run.

    RAY_AUTH_MODE=disabled python benchmarks/scale.py [--repeat 2] [--out benchmarks/results/scale.md]

For each worker count W a fresh local cluster is started with W CPUs and W logical GPUs. Sweep points
run as node tasks (W at a time); the split case cuts one `sample` node's batch over W ModelWorker
actors (one logical GPU each, holding no CPU, as on a GPU machine; here they compute on the CPU); the split SMC
cases run the strategy in one task and cut each of its denoiser calls over the W actors.
Per case: the local backend's wall time (one process, the same memory cache), the Ray wall time
(best of --repeat, the backend's key table cleared between
repeats so everything is recomputed), the speed-up of W=2 over W=1, and the overhead per task:
(Ray wall at W=1 - local wall) / tasks, beside Ray's empty-task latency (200 no-op tasks submitted at
once, per task; and a sequential submit-and-get round trip). Outputs are checked equal to the local
backend's, bit for bit. Torch runs one thread per process (OMP_NUM_THREADS=1) everywhere."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table  # noqa: E402

from samplegraph.runtime.api import Runtime  # noqa: E402
from samplegraph.runtime.backends import RayBackend  # noqa: E402
from samplegraph.runtime.sweep import parse_grids, run_sweep  # noqa: E402

torch.set_num_threads(1)


def gmm_workflow(batch: int, steps: int) -> dict:
    return {"version": 1, "seed": 0, "nodes": {
        "model": {"kind": "model.gmm", "params": {"preset": "ring"}},
        "sigmas": {"kind": "schedule.karras", "params": {"steps": steps, "sigma_min": 0.002, "sigma_max": 80.0}},
        "noise": {"kind": "latent.noise", "params": {"batch": batch, "shape": [2]}, "inputs": {"sigmas": "sigmas"}},
        "solver": {"kind": "sampler.heun"},
        "sample": {"kind": "sample", "inputs": {"denoise": "model", "sigmas": "sigmas", "sampler": "solver",
                                                "latent": "noise"}},
        "sliced_w2": {"kind": "metrics.sliced_wasserstein", "inputs": {"samples": "sample", "reference": "model"}}},
        "outputs": ["sliced_w2"]}


def smc_workflow(batch: int = 2048, **smc: object) -> dict:
    return {"version": 1, "seed": 0, "nodes": {
        "model": {"kind": "model.gmm", "params": {"preset": "ring"}},
        "reward": {"kind": "reward.linear", "params": {"a": [1.0, 0.0]}},
        "target": {"kind": "reward.tilted_gmm", "params": {"lam": 0.5},
                   "inputs": {"model": "model", "reward": "reward"}},
        "sigmas": {"kind": "schedule.karras", "params": {"steps": 20, "sigma_min": 0.01, "sigma_max": 20.0}},
        "noise": {"kind": "latent.noise", "params": {"batch": batch, "shape": [2]}, "inputs": {"sigmas": "sigmas"}},
        "solver": {"kind": "sampler.euler_ancestral"},
        "smc": {"kind": "search.smc", "params": {"particles": 16, "lam": 0.5, "potential": "difference", **smc},
                "inputs": {"denoise": "model", "sigmas": "sigmas", "sampler": "solver", "latent": "noise",
                           "reward": "reward"}},
        "sliced_w2": {"kind": "metrics.sliced_wasserstein", "inputs": {"samples": "smc", "reference": "target"}}},
        "outputs": ["sliced_w2"]}


def digits_smc_workflow(batch: int, max_batch: int) -> dict:
    """The shipped digits SMC (a network denoiser, steered by a classifier), `batch` particles in groups of 8,
    denoiser calls in chunks of max_batch (whole chunks go to the actors: exact for any model)."""
    wf = json.loads((Path(__file__).resolve().parents[1] / "workflows" / "search_digits_classifier.json").read_text())
    wf["nodes"]["noise"]["params"]["batch"] = batch
    wf["nodes"]["smc"]["params"]["max_batch"] = max_batch
    del wf["nodes"]["grid"]
    wf["outputs"] = ["accuracy.accuracy"]
    return wf


# name -> (workflow, grid flags: sweep points as tasks; None: one run, its sample batch or its search strategy's
# denoiser calls split over the actors)
CASES = {
    "sweep: 4 x Heun 40-43 steps, 4096 samples": (gmm_workflow(4096, 40), ["sigmas.steps=40,41,42,43"]),
    "SMC sweep: 4 x search.smc (lam), 2048 x 16": (smc_workflow(), ["smc.lam=0.25,0.5,0.75,1.0"]),
    "one sample node, 65536 samples, split": (gmm_workflow(65536, 40), None),
    "one search.smc, ring, 4096 x 16 particles, split": (smc_workflow(65536), None),
    "one search.smc, digits net, 4096 particles, max_batch 512, split": (digits_smc_workflow(4096, 512), None),
}


@ray.remote
def empty() -> None:
    return None


def empty_task_latency() -> tuple[float, float]:
    """(per task of 200 submitted at once, sequential round trip), seconds; after a warm-up."""
    ray.get([empty.remote() for _ in range(50)])
    start = time.perf_counter()
    ray.get([empty.remote() for _ in range(200)])
    batched = (time.perf_counter() - start) / 200
    start = time.perf_counter()
    for _ in range(50):
        ray.get(empty.remote())
    return batched, (time.perf_counter() - start) / 50


def run_case(runtime: Runtime, wf: dict, grid: list[str] | None, out: Path, parallel: bool = True
             ) -> tuple[list, int]:
    """(the outputs in order, the nodes computed); sweep points all in flight at once when `parallel` (Ray),
    else one after the other (the local backend: concurrent points on one Runtime could compute a shared key
    twice, since its memory cache has no in-flight entries)."""
    metric = wf["outputs"][0]
    if grid is None:
        r = runtime.run(wf)
        return [r[metric]], sum(n.cache == "miss" for n in r.report.nodes)
    axes = parse_grids(grid)
    s = run_sweep(runtime, wf, axes, out, parallel=len(axes[0].values) if parallel else 1)
    return [row[metric] for row in s.rows], s.computed


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scale.md")
    args = ap.parse_args()
    scratch = Path("/tmp/samplegraph-scale")
    load_start = os.getloadavg()[0]
    local: dict[str, tuple[float, list, int]] = {}
    for name, (wf, grid) in CASES.items():
        wall = min(timed(lambda: run_case(Runtime(device="cpu"), wf, grid, scratch / "local", False))[0]
                   for _ in range(args.repeat))
        values, computed = run_case(Runtime(device="cpu"), wf, grid, scratch / "local", False)
        local[name] = (wall, values, computed)
        print(f"local  {name}: {wall:.2f} s", flush=True)
    ray_wall: dict[tuple[str, int], float] = {}
    latency: dict[int, tuple[float, float]] = {}
    for workers in (1, 2):
        start = time.perf_counter()
        tasks_only = RayBackend(num_cpus=workers, num_gpus=workers)  # W CPUs: W node tasks at a time
        actors = RayBackend(model_workers=workers)  # the same cluster; W ModelWorkers (1 logical GPU, no CPU)
        print(f"ray W={workers}: cluster up in {time.perf_counter() - start:.1f} s", flush=True)
        latency[workers] = empty_task_latency()
        for name, (wf, grid) in CASES.items():
            backend = tasks_only if grid is not None else actors
            best = float("inf")
            for _ in range(args.repeat):
                backend.forget()
                wall, (values, computed) = timed(lambda: run_case(Runtime(device="cpu", backend=backend), wf, grid,
                                                                  scratch / f"ray{workers}"))
                assert values == local[name][1], f"{name}: ray W={workers} differs from the local backend"
                assert computed == local[name][2]
                best = min(best, wall)
            ray_wall[(name, workers)] = best
            print(f"ray W={workers} {name}: {best:.2f} s", flush=True)
        actors.close()
        ray.shutdown()
    rows = []
    for name in CASES:
        lw, _, tasks = local[name]
        w1, w2 = ray_wall[(name, 1)], ray_wall[(name, 2)]
        rows.append([name, tasks, lw, w1, w2, w1 / w2, lw / w2, 1e3 * (w1 - lw) / tasks])
    cases = table(["case", "tasks", "local s", "ray W=1 s", "ray W=2 s", "speed-up W2/W1", "speed-up vs local",
                   "overhead per task (ms)"], rows)
    lat = table(["workers", "empty task, 200 at once (ms)", "empty task, round trip (ms)"],
                [[w, 1e3 * b, 1e3 * s] for w, (b, s) in latency.items()])
    load = os.getloadavg()[0]
    text = (f"# Ray scale-out (`python benchmarks/scale.py`)\n\n{os.cpu_count()} cores, load average "
            f"{load_start:.1f} at the start and {load:.1f} at the end (the machine is shared); "
            f"best of {args.repeat}; outputs equal the local backend's bit for bit in every run.\n\n{cases}\n\n"
            f"Ray's own latency in the same run:\n\n{lat}\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
