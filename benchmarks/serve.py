"""`samplegraph serve` and ComfyUI's server under 100 queued tiny jobs, beside a direct `Runtime.run` loop.

    python benchmarks/serve.py [--jobs 100] [--workers 1] [--job png|gmm]
    COMFYUI_DIR=... COMFYUI_PYTHON=... python benchmarks/serve.py  # adds ComfyUI's rows (benchmarks/comfyui_server.py)

The tiny job (`--job png`, the default) needs no model on either side: samplegraph makes one 3x64x64 image
(schedule.karras -> latent.noise at sigma 1e-4, one flat colour once quantised -> io.save_image, a PNG with the
workflow in its metadata); ComfyUI makes one 64x64 colour image (EmptyImage -> SaveImage, a PNG with the prompt
in its metadata). Each job has its own seed / colour, so no cache skips one. `--job gmm` is a GMM sample of 8
points in 4 Euler steps, saved as a tensor (samplegraph only: ComfyUI has no sampling job without a model file).

Each server runs in its own process with one queue worker (ComfyUI has one). All jobs are submitted at once, one
client thread each, released together by a barrier: samplegraph's threads POST the job, then open its SSE
stream (its events are replayed from the first); ComfyUI's open a WebSocket with their own clientId before the
barrier (ComfyUI does not replay), then POST /prompt. ComfyUI is measured a second time the way its own API
examples work, as one client: one WebSocket and reader thread, 100 POST threads.

Per job: "first" = POST sent to the first event about this job received (samplegraph: its "queued"; ComfyUI
sends no per-prompt event before "execution_start"), "started" = to run_started / execution_start (the job
reached the worker, after the jobs ahead of it), "done" = to the terminal event (succeeded / execution_success).
Throughput is jobs / (last terminal event - first POST). The direct loop runs the same workflows with
`Runtime.run` in this process ("first" = its first `on_event` call, "done" = the call's return). Every side runs
one warm-up job first; server start-up (process start to the first answer) is reported apart."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from comfyui_server import ComfyUIInstall, ComfyUIServer, png_prompt  # noqa: E402
from common import concurrently, table  # noqa: E402
from helpers_serve import Server, free_port, parse_sse, tiny_workflow  # noqa: E402

from samplegraph import Runtime  # noqa: E402

Workflow = dict[str, Any]
WARM_UP = 10**6  # seed / colour of the warm-up job, distinct from every measured one


def png_workflow(seed: int, size: int = 64) -> Workflow:
    """One 3 x size x size image saved as a PNG with the workflow in its metadata: noise at sigma 1e-4, which
    8-bit quantisation makes flat black (a value rounds to 1/255 only past 1/510, 19.6 sigma), so its PNG
    encodes like ComfyUI's one-colour image."""
    return {"version": 1, "seed": seed, "nodes": {
        "sigmas": {"kind": "schedule.karras", "params": {"steps": 1, "sigma_min": 1e-5, "sigma_max": 1e-4}},
        "noise": {"kind": "latent.noise", "params": {"batch": 1, "shape": [3, size, size]},
                  "inputs": {"sigmas": "sigmas"}},
        "save": {"kind": "io.save_image", "params": {"path": "x.png"}, "inputs": {"images": "noise"}}},
        "outputs": ["save"]}


JOBS: dict[str, tuple[str, Callable[[int], Workflow]]] = {
    "png": ("one 64x64 image saved as a PNG with its workflow", png_workflow),
    "gmm": ("GMM, 4 Euler steps, 8 points, io.save_tensor", lambda seed: tiny_workflow(seed=seed, steps=4)),
}


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def summarize(results: list[dict[str, Any]]) -> dict[str, float]:
    """jobs/s and the p50 / p99 of each per-job time; every job must have succeeded."""
    bad = [r for r in results if r.get("status") != "succeeded"]
    if bad:
        raise RuntimeError(f"{len(bad)} of {len(results)} jobs did not succeed, e.g. {bad[0]}")
    first_post = min(r["t0"] for r in results)
    out = {"jobs_per_s": len(results) / (max(r["t0"] + r["done"] for r in results) - first_post)}
    for key in ("submit", "first", "started", "done"):
        if all(key in r for r in results):
            xs = [r[key] for r in results]
            out[f"{key}_p50"], out[f"{key}_p99"] = percentile(xs, 0.5), percentile(xs, 0.99)
    return out


def stream_times(srv: Server, job_id: str, t0: float) -> dict[str, Any]:
    """Seconds from t0 to the first event, to run_started and to the terminal event of a job's live stream."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=300)
    conn.request("GET", f"/api/v1/jobs/{job_id}/events")
    resp = conn.getresponse()
    times: dict[str, Any] = {}
    block = ""
    try:
        while True:
            line = resp.fp.readline().decode()
            if not line:
                return times
            block += line
            if line.strip():
                continue
            for e in parse_sse(block + "\n"):
                now = time.perf_counter() - t0
                times.setdefault("first", now)
                if e["type"] == "run_started":
                    times.setdefault("started", now)
                if e["type"] in ("succeeded", "failed", "cancelled"):
                    times["done"], times["status"] = now, e["type"]
                    return times
            block = ""
    finally:
        conn.close()


def bench_server(jobs: int, workers: int, make: Callable[[int], Workflow]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        srv = Server(Path(tmp) / "state", workers=workers).start()
        startup = time.perf_counter() - t
        try:
            assert srv.submit(make(WARM_UP), wait=60)["status"] == "succeeded"

            def one(i: int, barrier: threading.Barrier) -> dict[str, Any]:
                barrier.wait()
                t0 = time.perf_counter()
                job = srv.submit(make(i))
                submitted = time.perf_counter() - t0
                return {**stream_times(srv, job["id"], t0), "submit": submitted, "t0": t0}

            results = concurrently(jobs, one)
        finally:
            srv.stop()
    return {**summarize(results), "startup_s": startup}


def bench_comfyui(jobs: int, install: ComfyUIInstall) -> dict[str, dict[str, float]]:
    """One ComfyUI server: the jobs from `jobs` clients with a WebSocket each (as samplegraph's clients with a
    stream each), then other jobs from one client with one WebSocket (ComfyUI's own examples' way)."""
    srv = ComfyUIServer(install, free_port()).start()
    try:
        assert srv.run_timed(png_prompt(WARM_UP))["status"] == "succeeded", srv.log_tail()
        many = concurrently(jobs, lambda i, barrier: srv.run_timed(png_prompt(i), barrier))
        one = srv.run_shared_socket([png_prompt(jobs + i) for i in range(jobs)])
    finally:
        srv.stop()
    return {"sockets": {**summarize(many), "startup_s": srv.startup_s}, "socket": summarize(one)}


def bench_direct(jobs: int, make: Callable[[int], Workflow]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(device="cpu", cache_dir=Path(tmp) / "cache")
        rt.run(make(WARM_UP), out_dir=Path(tmp) / "warm")
        results = []
        for i in range(jobs):
            t0 = time.perf_counter()
            seen: list[float] = []
            rt.run(make(i), out_dir=Path(tmp) / str(i),
                   on_event=lambda e: seen.append(time.perf_counter() - t0) if not seen else None)
            results.append({"t0": t0, "first": seen[0], "done": time.perf_counter() - t0,
                            "status": "succeeded"})
    return summarize(results)


def row(name: str, r: dict[str, float] | None, note: str = "") -> list[object]:
    """One table row: jobs/s, then p50 / p99 in ms of first, started, done, POST; start-up in s."""
    if r is None:
        return [name, note, "-", "-", "-", "-", "-"]

    def pair(key: str) -> str:
        return f"{1000 * r[key + '_p50']:.1f} / {1000 * r[key + '_p99']:.1f}" if key + "_p50" in r else "-"

    startup = f"{r['startup_s']:.1f}" if "startup_s" in r else "-"
    return [name, f"{r['jobs_per_s']:.1f}", pair("first"), pair("started"), pair("done"), pair("submit"), startup]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--workers", type=int, default=1, help="samplegraph server workers (ComfyUI has one)")
    p.add_argument("--job", choices=sorted(JOBS), default="png")
    args = p.parse_args()
    torch.set_num_threads(1)
    what, make = JOBS[args.job]
    install = ComfyUIInstall.from_env(os.environ)
    direct = bench_direct(args.jobs, make)
    served = bench_server(args.jobs, args.workers, make)
    if args.job != "png":
        comfy_rows = [row("ComfyUI server", None, "no equivalent job without a model file (use --job png)")]
    elif isinstance(install, str):
        comfy_rows = [row("ComfyUI server", None, install)]
    else:
        comfy = bench_comfyui(args.jobs, install)
        name = f"ComfyUI {install.version()} server"
        comfy_rows = [row(f"{name}, a WebSocket per client", comfy["sockets"]),
                      row(f"{name}, one client and WebSocket", comfy["socket"])]
    print(f"{args.jobs} queued jobs ({what}), {args.workers} samplegraph server worker(s); "
          f"the client threads share the machine's {os.cpu_count()} cores with the servers\n")
    print(table(["", "jobs/s", "first event p50 / p99 (ms)", "started p50 / p99 (ms)", "done p50 / p99 (ms)",
                 "POST p50 / p99 (ms)", "server start-up (s)"],
                [row("samplegraph serve, a stream per job", served), *comfy_rows,
                 row("direct Runtime.run loop", direct)]))
    print(f"\nsamplegraph overhead ratio (direct jobs/s / server jobs/s): "
          f"{direct['jobs_per_s'] / served['jobs_per_s']:.2f}")


if __name__ == "__main__":
    main()
