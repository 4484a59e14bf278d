"""`samplegraph sweep` and runtime/sweep.py on the local backend: a grid's shared upstream nodes run
once (counted from the run reports), a re-run computes nothing, rows equal separate `samplegraph run`s
bit for bit, and bad --grid flags are located errors (exit 2)."""
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from samplegraph.graph.errors import WorkflowError
from samplegraph.runtime.api import Runtime
from samplegraph.runtime.sweep import grid_points, parse_grids, run_sweep, split_values

ROOT = Path(__file__).resolve().parents[1]
WF = {"version": 1, "seed": 0, "nodes": {
    "model": {"kind": "model.gmm", "params": {"preset": "ring"}},
    "sigmas": {"kind": "schedule.karras", "params": {"steps": 6, "sigma_min": 0.002, "sigma_max": 80.0}},
    "noise": {"kind": "latent.noise", "params": {"batch": 256, "shape": [2]}, "inputs": {"sigmas": "sigmas"}},
    "solver": {"kind": "sampler.heun"},
    "sample": {"kind": "sample", "inputs": {"denoise": "model", "sigmas": "sigmas", "sampler": "solver",
                                            "latent": "noise"}},
    "sliced_w2": {"kind": "metrics.sliced_wasserstein", "params": {"projections": 32},
                  "inputs": {"samples": "sample", "reference": "model"}}},
    "outputs": ["sliced_w2", "sample"]}
GRID = ["sigmas.steps=4,8", "sliced_w2.projections=16,64"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "samplegraph.runtime.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def computed_per_node(sweep) -> Counter:
    return Counter(n.node for r in sweep.results for n in r.report.nodes if n.cache == "miss")


def test_a_2x2_sweep_runs_its_shared_prefix_once_and_a_rerun_computes_nothing(tmp_path):
    runtime = Runtime(device="cpu", cache_dir=tmp_path / "cache")
    sweep = run_sweep(runtime, WF, parse_grids(GRID), tmp_path / "out")
    assert len(sweep.rows) == 4
    # model and solver are shared by all 4 points, sigmas/noise/sample by 2, the metric by none
    assert computed_per_node(sweep) == {"model": 1, "solver": 1, "sigmas": 2, "noise": 2, "sample": 2,
                                        "sliced_w2": 4}
    assert sweep.computed == 12 < 4 * len(WF["nodes"])
    again = run_sweep(runtime, WF, parse_grids(GRID), tmp_path / "out2")
    assert again.computed == 0 and all(r["side_effects"] == 0 for r in again.rows)
    assert [r["sliced_w2"] for r in again.rows] == [r["sliced_w2"] for r in sweep.rows]
    # a new process (a fresh Runtime on the same disk cache) recomputes only what lives in memory only:
    # the sampler object (microseconds); every tensor and metric comes from disk
    fresh = run_sweep(Runtime(device="cpu", cache_dir=tmp_path / "cache"), WF, parse_grids(GRID), tmp_path / "out3")
    assert computed_per_node(fresh) == {"solver": 1}
    assert [r["sliced_w2"] for r in fresh.rows] == [r["sliced_w2"] for r in sweep.rows]


def test_sweep_rows_equal_separate_samplegraph_runs_bit_for_bit(tmp_path):
    wf_path = tmp_path / "wf.json"
    wf_path.write_text(json.dumps(WF))
    proc = cli("sweep", str(wf_path), *[a for g in GRID for a in ("--grid", g)], "--out", str(tmp_path / "sw"),
               "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "4 grid points; 12 nodes computed" in proc.stdout
    rows = [json.loads(line) for line in (tmp_path / "sw/results.jsonl").read_text().splitlines()]
    assert (tmp_path / "sw/results.csv").read_text().splitlines()[0].startswith("sigmas.steps,sliced_w2.projections")
    assert (tmp_path / "sw/sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    points = grid_points(parse_grids(GRID))
    assert [{k: r[k] for k in p} for r, p in zip(rows, points)] == points
    for i in (0, 3):  # two separate `samplegraph run`s, no cache: their reports hold the metric in full precision
        sets = [a for k, v in points[i].items() for a in ("--set", f"{k}={v}")]
        run = cli("run", str(wf_path), *sets, "--out", str(tmp_path / f"run{i}"), "--no-cache", "--device", "cpu",
                  "--quiet", "--output", "sliced_w2")
        assert run.returncode == 0, run.stderr
        report = json.loads((tmp_path / f"run{i}/report.json").read_text())
        assert report["outputs"]["sliced_w2"] == rows[i]["sliced_w2"]  # float equality: bit for bit
    # the sampled tensors too, against uncached in-process runs
    sweep = run_sweep(Runtime(device="cpu", cache_dir=tmp_path / "cache"), WF, parse_grids(GRID), tmp_path / "sw2")
    for point, result in zip(points, sweep.results):
        alone = Runtime(device="cpu", cache=False).run(WF, overrides=point)
        assert torch.equal(alone["sample"], result["sample"]) and alone["sliced_w2"] == result["sliced_w2"]


@pytest.mark.parametrize("grids, message", [
    (["sigmas.steps"], "must look like NODE.PARAM=v1,v2"),
    (["steps=1,2"], "must look like NODE.PARAM=v1,v2"),
    (["sigmas.steps=4,,8"], "--grid 'sigmas.steps': value 2 is empty"),
    (["sigmas.steps=4", "sigmas.steps=8"], "is given twice"),
    ([], "needs at least one --grid"),
])
def test_malformed_grids_are_located_errors(grids, message):
    with pytest.raises(WorkflowError, match=message.replace(".", r"\.")):
        parse_grids(grids)


def test_grids_naming_unknown_nodes_params_or_bad_values_exit_2_with_every_problem(tmp_path):
    wf_path = tmp_path / "wf.json"
    wf_path.write_text(json.dumps(WF))
    proc = cli("sweep", str(wf_path), "--grid", "sigma.steps=1,2", "--out", str(tmp_path / "o"), "--no-cache")
    assert proc.returncode == 2 and "--grid 'sigma.steps' names no node (did you mean 'sigmas'?)" in proc.stderr
    proc = cli("sweep", str(wf_path), "--grid", "sigmas.steps=0,4", "--grid", "sliced_w2.projectionz=1",
               "--out", str(tmp_path / "o"), "--no-cache")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "node 'sigmas', param 'steps'" in proc.stderr and "at grid point sigmas.steps=0" in proc.stderr
    assert "unknown parameter 'projectionz'" in proc.stderr  # all problems at once
    assert not (tmp_path / "o").exists()  # nothing ran


def test_grid_values_split_outside_brackets_and_strings():
    assert split_values('1,[2,3],"a,b",{"k":[1,2]}') == ["1", "[2,3]", '"a,b"', '{"k":[1,2]}']
    axis, = parse_grids(['noise.shape=[2],[3]'])
    assert axis.values == ([2], [3])


def test_ray_only_flags_are_refused_on_the_local_backend(tmp_path, capsys):
    from samplegraph.runtime.cli import main

    wf_path = tmp_path / "wf.json"
    wf_path.write_text(json.dumps(WF))
    for flags in (["--address", "auto"], ["--parallel", "4"]):
        assert main(["sweep", str(wf_path), "--grid", "sigmas.steps=4,8", "--no-cache", *flags]) == 2
        assert "--address and --parallel are for --backend ray" in capsys.readouterr().err
