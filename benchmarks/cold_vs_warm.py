"""Cold run versus warm re-run of workflows/quickstart.json in a NEW process each time,
sharing one disk cache: the second process should hit the disk cache for every cacheable node.
Also a heavier variant of the same workflow (more samples and steps), where the work the
cache saves outweighs interpreter start-up and importing torch (~2 s here).

    python benchmarks/cold_vs_warm.py"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import table

ROOT = Path(__file__).resolve().parents[1]


VARIANTS = {"quickstart (4096 samples, 18 Heun steps)": [],
            "heavier (65536 samples, 100 Heun steps)": ["--set", "noise.batch=65536", "--set", "sigmas.steps=100"]}


def run_once(cache: Path, out: Path, extra: list[str]) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "samplegraph.runtime.cli", "run", str(ROOT / "workflows/quickstart.json"),
           "--cache-dir", str(cache), "--out", str(out), "--quiet", "--device", "cpu", *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - start
    return wall, json.loads((out / "report.json").read_text())


def main() -> None:
    rows = []
    for name, extra in VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "cache"
            cold_wall, cold = run_once(cache, Path(tmp) / "cold", extra)
            warm_wall, warm = run_once(cache, Path(tmp) / "warm", extra)
        hits = sum(n["cache"] == "disk" for n in warm["nodes"])
        cacheable = sum(n["cache"] != "uncached" for n in warm["nodes"])
        rows += [[name, "cold (empty cache)", cold_wall, cold["wall_s"], cold["nfe"], ""],
                 [name, "warm (new process)", warm_wall, warm["wall_s"], warm["nfe"], f"{hits}/{cacheable}"],
                 [name, "ratio cold / warm", cold_wall / warm_wall, cold["wall_s"] / warm["wall_s"], "", ""]]
    print(table(["workflow", "run", "process wall s (incl. interpreter + imports)", "workflow wall s (report)",
                 "NFE", "disk hits"], rows))


if __name__ == "__main__":
    main()
