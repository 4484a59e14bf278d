"""Cold run versus warm re-run of workflows/quickstart.json in a NEW process each time,
sharing one disk cache: the second process should hit the disk cache for every cacheable node.

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


def run_once(cache: Path, out: Path) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "samplegraph.runtime.cli", "run", str(ROOT / "workflows/quickstart.json"),
           "--cache-dir", str(cache), "--out", str(out), "--quiet", "--device", "cpu"]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - start
    return wall, json.loads((out / "report.json").read_text())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cold_wall, cold = run_once(cache, Path(tmp) / "cold")
        warm_wall, warm = run_once(cache, Path(tmp) / "warm")
    hits = sum(n["cache"] == "disk" for n in warm["nodes"])
    cacheable = sum(n["cache"] != "uncached" for n in warm["nodes"])
    rows = [["cold (empty cache)", cold_wall, cold["wall_s"], cold["nfe"]],
            ["warm (new process, disk cache)", warm_wall, warm["wall_s"], warm["nfe"]],
            ["ratio cold / warm", cold_wall / warm_wall, cold["wall_s"] / warm["wall_s"], ""]]
    print(f"warm run: {hits}/{cacheable} cacheable nodes were disk hits")
    print(table(["run", "process wall s (incl. interpreter + imports)", "workflow wall s (report)", "NFE"], rows))


if __name__ == "__main__":
    main()
