"""RayBackend on a local 2-CPU cluster with 2 logical GPUs: a sample batch of 8 over 2 ModelWorker actors
equals the local run bit for bit; a 2x2 sweep runs its shared prefix once and a re-run computes nothing;
SIGKILL of an actor mid-call is survived with identical output. Marked `ray` (not in the default run):
`pip install -e ".[ray]" && python -m pytest -m ray`."""
import os
import signal
import threading
import time
from collections import Counter

import pytest
import torch

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

from samplegraph.graph.errors import NodeRunError  # noqa: E402
from samplegraph.runtime.api import Runtime  # noqa: E402
from samplegraph.runtime.backends import RayBackend  # noqa: E402
from samplegraph.runtime.backends.model_worker import chunks  # noqa: E402
from samplegraph.runtime.backends.ray_backend import worker_pids  # noqa: E402
from samplegraph.runtime.sweep import parse_grids, run_sweep  # noqa: E402


def workflow(batch: int, steps: int, solver: str = "sampler.euler_ancestral") -> dict:
    return {"version": 1, "seed": 3, "nodes": {
        "model": {"kind": "model.gmm", "params": {"preset": "ring"}},
        "sigmas": {"kind": "schedule.karras", "params": {"steps": steps, "sigma_min": 0.002, "sigma_max": 80.0}},
        "noise": {"kind": "latent.noise", "params": {"batch": batch, "shape": [2]}, "inputs": {"sigmas": "sigmas"}},
        "solver": {"kind": solver},
        "sample": {"kind": "sample", "inputs": {"denoise": "model", "sigmas": "sigmas", "sampler": "solver",
                                                "latent": "noise"}},
        "sliced_w2": {"kind": "metrics.sliced_wasserstein", "params": {"projections": 32},
                      "inputs": {"samples": "sample", "reference": "model"}}},
        "outputs": ["sample", "sliced_w2"]}


@pytest.fixture(scope="module")
def backend():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray >= 2.59 turns token auth on for local clusters
    b = RayBackend(num_cpus=2, num_gpus=2, model_workers=2, object_store_bytes=100 << 20)
    yield b
    b.close()
    ray.shutdown()


def test_chunks_cover_the_batch_without_gaps():
    assert chunks(8, 2) == [(0, 4), (4, 4)] and chunks(5, 3) == [(0, 2), (2, 2), (4, 1)] and chunks(1, 2) == [(0, 1)]


def test_8_particles_over_2_logical_gpu_actors_equal_the_local_run(backend, tmp_path):
    wf = workflow(8, 6)  # ancestral: fresh noise every step, keyed by particle id
    local = Runtime(device="cpu", cache=False).run(wf)
    remote = Runtime(device="cpu", cache_dir=tmp_path, backend=backend).run(wf)
    assert torch.equal(remote["sample"], local["sample"]) and remote["sliced_w2"] == local["sliced_w2"]
    sample = next(n for n in remote.report.nodes if n.node == "sample")
    assert sample.cache == "miss" and sample.metrics == {"workers": 2} and sample.nfe == 6
    assert all(len(ray.get(w.resident.remote())) >= 1 for w in backend.workers)  # each loaded the model


def test_a_2x2_ray_sweep_runs_its_shared_prefix_once_and_a_rerun_computes_nothing(backend, tmp_path):
    backend.forget()  # nothing submitted by earlier tests is shared
    wf, grid = workflow(64, 4, "sampler.heun"), parse_grids(["sigmas.steps=4,8", "sliced_w2.projections=16,64"])
    local = run_sweep(Runtime(device="cpu", cache=True), wf, grid, tmp_path / "local")
    runtime = Runtime(device="cpu", cache_dir=tmp_path / "cache", backend=backend)
    sweep = run_sweep(runtime, wf, grid, tmp_path / "ray", parallel=4)  # all points in flight at once
    computed = Counter(n.node for r in sweep.results for n in r.report.nodes if n.cache == "miss")
    assert computed == {"model": 1, "solver": 1, "sigmas": 2, "noise": 2, "sample": 2, "sliced_w2": 4}
    assert [r["sliced_w2"] for r in sweep.rows] == [r["sliced_w2"] for r in local.rows]
    assert all(torch.equal(a["sample"], b["sample"]) for a, b in zip(sweep.results, local.results))
    again = run_sweep(runtime, wf, grid, tmp_path / "ray2", parallel=4)
    assert again.computed == 0 and [r["sliced_w2"] for r in again.rows] == [r["sliced_w2"] for r in sweep.rows]


def test_sigkill_of_a_model_worker_mid_call_is_retried_and_the_output_is_identical(backend, tmp_path):
    backend.forget()
    wf = workflow(20000, 200)  # ~2-4 s per chunk on a loaded core: long enough to be killed mid-call
    local = Runtime(device="cpu", cache=False).run(wf)
    pids = worker_pids(backend)
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(
        r=Runtime(device="cpu", cache_dir=tmp_path, backend=backend).run(wf)))
    start = time.perf_counter()
    runner.start()
    time.sleep(1.0)
    assert runner.is_alive(), "the run ended before the kill: make the workflow longer"
    os.kill(pids[0], signal.SIGKILL)
    runner.join(timeout=240)
    assert "r" in result, "the run did not finish after the worker was killed"
    assert time.perf_counter() - start > 1.0
    assert torch.equal(result["r"]["sample"], local["sample"])
    assert worker_pids(backend)[0] != pids[0]  # the actor was restarted (max_restarts) and the call retried


def test_a_failing_node_raises_its_located_error_and_is_not_remembered(backend, tmp_path):
    wf = workflow(8, 4)
    wf["nodes"]["noise"]["params"]["shape"] = [3]  # the ring is 2-d: the model node fails inside its task
    local = pytest.raises(NodeRunError, Runtime(device="cpu", cache=False).run, wf).value
    for b in (backend, RayBackend()):  # the sample split over the actors, and a plain node task (same cluster)
        runtime = Runtime(device="cpu", cache_dir=tmp_path, backend=b)
        with pytest.raises(NodeRunError) as first:
            runtime.run(wf)
        with pytest.raises(NodeRunError) as again:  # tried again, not a remembered failure
            runtime.run(wf)
        assert first.value.node == again.value.node == local.node == "sample"
        assert str(first.value) == str(again.value) and "make the latent shape [2]" in str(first.value)
    assert str(first.value) == str(local)  # the plain task: the very message of the local run
