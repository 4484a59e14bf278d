"""benchmarks/pipeline.py end to end at its smallest: the three variants (diffusers, samplegraph with CFG batched
and separate) each give a row, and the images the benchmark compares agree with diffusers' to float32 rounding
(so the times it prints are of the same computation)."""
import subprocess
import sys
from pathlib import Path

import pytest

from peers import diffusers

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~40 s: three memory-measuring child processes, each importing diffusers
def test_the_benchmark_prints_three_rows_of_the_same_images():
    diffusers()  # skip without the peer
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pipeline.py"), "--size", "64", "--steps", "2",
                           "--repeat", "1"], capture_output=True, text=True, timeout=600, cwd=ROOT / "benchmarks")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("| diffusers", "| samplegraph"))]
    assert [r.split("|")[1].strip() for r in rows] == ["diffusers", "samplegraph batched", "samplegraph separate"]
    assert all(float(r.split("|")[-2]) < 1e-5 for r in rows), rows
