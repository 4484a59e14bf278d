"""`samplegraph serve` under 100 queued tiny jobs, against a direct `Runtime.run` loop on the same jobs.

    python benchmarks/serve.py [--jobs 100] [--workers 1] [--steps 4]

A real server in a subprocess (one worker by default, like ComfyUI's single queue). All jobs are submitted at
once from one thread each; every thread POSTs its job, opens its SSE stream and records the times of the
first event it receives ("queued": ingestion, validation, persistence and delivery), of "run_started" (the
job reached a worker; includes the wait behind the jobs ahead of it) and of its terminal event. Throughput is
jobs / (last terminal event - first submit). The direct loop runs the same workflows (distinct seeds, so no
cache hits) with `Runtime.run` in this process; its "first event" is the run's first `on_event` call.
Both sides run one warm-up job first. The overhead ratio is direct jobs/s over server jobs/s.

No ComfyUI column: its server comes only with the whole application (the repository snapshot is larger than
this sandbox's fetch limit; see benchmarks/executor_overhead.py), so it could not be run headless here."""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from common import table  # noqa: E402
from helpers_serve import Server, parse_sse, tiny_workflow  # noqa: E402

from samplegraph import Runtime  # noqa: E402


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def stream_times(srv: Server, job_id: str, t0: float) -> dict[str, float]:
    """Seconds from t0 to the first event, to run_started and to the terminal event of a job's live stream."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=300)
    conn.request("GET", f"/api/v1/jobs/{job_id}/events")
    resp = conn.getresponse()
    times: dict[str, float] = {}
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
                    times["done"] = now
                    times["status"] = e["type"]  # type: ignore[assignment]
                    return times
            block = ""
    finally:
        conn.close()


def bench_server(jobs: int, workers: int, steps: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(Path(tmp) / "state", workers=workers).start()
        try:
            assert srv.submit(tiny_workflow(seed=10**6, steps=steps), wait=60)["status"] == "succeeded"  # warm-up
            results: list[dict[str, float]] = [{} for _ in range(jobs)]
            start = time.perf_counter()

            def one(i: int) -> None:
                t0 = time.perf_counter()
                job = srv.submit(tiny_workflow(seed=i, steps=steps))
                submitted = time.perf_counter() - t0
                times = stream_times(srv, job["id"], t0)
                results[i] = {**times, "submit": submitted, "t0": t0 - start}

            threads = [threading.Thread(target=one, args=(i,)) for i in range(jobs)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = max(r["t0"] + r["done"] for r in results)
        finally:
            srv.stop()
    assert all(r.get("status") == "succeeded" for r in results), results
    first = [r["first"] for r in results]
    started = [r["started"] for r in results]
    return {"jobs_per_s": jobs / wall, "first_p50": percentile(first, 0.5), "first_p99": percentile(first, 0.99),
            "started_p50": percentile(started, 0.5), "started_p99": percentile(started, 0.99),
            "submit_p50": percentile([r["submit"] for r in results], 0.5)}


def bench_direct(jobs: int, steps: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(device="cpu", cache_dir=Path(tmp) / "cache")
        rt.run(tiny_workflow(seed=10**6, steps=steps), out_dir=Path(tmp) / "warm")
        first: list[float] = []
        start = time.perf_counter()
        for i in range(jobs):
            t0 = time.perf_counter()
            seen: list[float] = []
            rt.run(tiny_workflow(seed=i, steps=steps), out_dir=Path(tmp) / str(i),
                   on_event=lambda e: seen.append(time.perf_counter() - t0) if not seen else None)
            first.append(seen[0])
        wall = time.perf_counter() - start
    return {"jobs_per_s": jobs / wall, "first_p50": percentile(first, 0.5), "first_p99": percentile(first, 0.99)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)
    direct = bench_direct(args.jobs, args.steps)
    served = bench_server(args.jobs, args.workers, args.steps)
    ms = lambda s: f"{1000 * s:.1f}"  # noqa: E731
    print(f"{args.jobs} jobs (GMM, {args.steps} Euler steps, 8 points, io.save_tensor), "
          f"{args.workers} server worker(s)\n")
    print(table(["", "jobs/s", "first event p50 (ms)", "first event p99 (ms)", "run_started p50 (ms)",
                 "run_started p99 (ms)"],
                [["samplegraph serve", served["jobs_per_s"], ms(served["first_p50"]), ms(served["first_p99"]),
                  ms(served["started_p50"]), ms(served["started_p99"])],
                 ["direct Runtime.run loop", direct["jobs_per_s"], ms(direct["first_p50"]), ms(direct["first_p99"]),
                  "-", "-"]]))
    print(f"\noverhead ratio (direct jobs/s / server jobs/s): {direct['jobs_per_s'] / served['jobs_per_s']:.2f}; "
          f"POST p50 {ms(served['submit_p50'])} ms")


if __name__ == "__main__":
    main()
