"""Warm re-runs of every shipped workflow: two fresh processes on one disk cache. The second
must see no cache warnings and hit the disk for every node whose output the disk can hold, so
every port type that reaches the disk cache round-trips (issue 9, item 1)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent
from helpers_workflows import LIGHT_WORKFLOWS as WORKFLOWS  # heavy LM workflows: tests/test_lm_workflows.py


def run_all(cache_dir: Path, out_dir: Path) -> dict:
    """Every workflow in one fresh process (a fresh Runtime each, so no memory hits across them)."""
    out = subprocess.run([sys.executable, str(TESTS / "helpers_cache_runs.py"), str(cache_dir), str(out_dir),
                          *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_every_workflow_reruns_from_the_disk_cache_without_warnings(tmp_path):
    first = run_all(tmp_path / "cache", tmp_path / "out")
    stored = {p.name for p in (tmp_path / "cache").glob("*/*.safetensors")}
    second = run_all(tmp_path / "cache", tmp_path / "out")
    assert {name: r["events"] for name, r in {**first, **second}.items() if r["events"]} == {}
    # a miss on the warm run is only allowed for a node whose outputs the disk cannot hold (live objects)
    misses = {f"{wf}.{node}": (n["kind"], n["decodable"]) for wf, r in second.items()
              for node, n in r["nodes"].items() if n["cache"] == "miss" and n["decodable"]}
    assert misses == {}
    assert {p.name for p in (tmp_path / "cache").glob("*/*.safetensors")} == stored  # nothing new to write
    hits = sum(n["cache"] == "disk" for r in second.values() for n in r["nodes"].values())
    assert len(second) == len(WORKFLOWS) and hits >= len(WORKFLOWS)
