"""CPU threads for torch: wall time of small and large workflows at each thread count, on an idle
machine and on one kept busy by other processes, to choose the CLI's default.

    python benchmarks/threads.py [--repeat 3] [--quick]

Each cell is the median workflow wall time (the run report's, no cache) over `repeat` runs in one
process per thread count; "busy" runs the same beside one spinning process per core (a loaded CI
machine). The last column is what `threads="auto"` (runtime/threads.py) picked in that condition,
and its time relative to the best fixed choice of the row."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import table
from samplegraph.runtime.threads import available_cores

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = {  # name: (workflow, overrides)
    "quickstart (4096 x 2-D, 18 Heun)": ("quickstart.json", {}),
    "large (65536 x 2-D, 100 Heun)": ("quickstart.json", {"noise.batch": 65536, "sigmas.steps": 100}),
    "digits CFG (64 x 8x8 MLP, 20 Heun)": ("digits_cfg.json", {}),
    "search SMC (GMM)": ("search_smc.json", {}),
}
QUICK = {"noise.batch": 16384, "sigmas.steps": 40}
CHILD = """
import json, statistics, sys, torch
from samplegraph import Runtime
from samplegraph.runtime.threads import apply_threads
wf, overrides, threads, repeat = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
chosen = apply_threads(threads if threads == "auto" else int(threads))
rt = Runtime(device="cpu", cache=False)
times = [rt.run(wf, overrides=overrides, out_dir=sys.argv[5]).report.wall_s for _ in range(repeat)]
print(json.dumps({"median": statistics.median(times), "threads": chosen}))
"""


def measure(workflow: str, overrides: dict, threads: str, repeat: int, out: Path) -> dict:
    """Median wall seconds of `repeat` runs in a fresh process at `threads`."""
    proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "workflows" / workflow), json.dumps(overrides),
                           threads, str(repeat), str(out)], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def spinners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller 'large' workload")
    args = ap.parse_args()
    cores = available_cores()
    counts = sorted({1, 2, cores})
    out = Path("/tmp/samplegraph-threads-bench")
    rows = []
    for condition, busy in (("idle", 0), ("busy", cores)):
        procs = spinners(busy)
        try:
            for name, (wf, overrides) in WORKLOADS.items():
                if args.quick and "large" in name:
                    overrides = QUICK
                fixed = {t: measure(wf, overrides, str(t), args.repeat, out)["median"] for t in counts}
                auto = measure(wf, overrides, "auto", args.repeat, out)
                best = min(fixed.values())
                rows.append([name, condition, *[fixed[t] for t in counts],
                             f"{auto['threads']} ({auto['median'] / best:.2f}x best)"])
                print(rows[-1], flush=True)
        finally:
            for p in procs:
                p.kill()
    print(f"\n{cores} cores; median workflow wall s of {args.repeat} runs; busy = {cores} spinning processes\n")
    print(table(["workload", "machine", *[f"threads {t}" for t in counts], "auto: threads (vs best)"], rows))


if __name__ == "__main__":
    main()
