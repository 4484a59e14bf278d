"""RayBackend on a local 2-CPU cluster with 2 logical GPUs: a sample batch of 8 over 2 ModelWorker actors
equals the local run bit for bit, and so do search strategies (SMC with 8 particles, best-of-N, every shipped
search workflow) whose denoiser calls the actors make; a 2x2 sweep runs its shared prefix once and a re-run
computes nothing; SIGKILL of an actor mid-call is survived with identical output; a CancelToken set mid-run
cancels the submitted tasks and actor calls. Marked `ray` (not in the default run):
`pip install -e ".[ray]" && python -m pytest -m ray`."""
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

from samplegraph.graph.errors import NodeRunError, RunCancelled  # noqa: E402
from samplegraph.runtime.api import CancelToken, Runtime  # noqa: E402
from samplegraph.runtime.backends import RayBackend  # noqa: E402
from samplegraph.runtime.backends.model_worker import chunks  # noqa: E402
from samplegraph.runtime.backends.ray_backend import worker_pids  # noqa: E402
from samplegraph.runtime.events import NodeStarted  # noqa: E402
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


WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
SEARCH_WORKFLOWS = sorted(p.name for p in WORKFLOWS.glob("search_*.json"))


def smc_workflow(particles: int = 8, groups: int = 1, **params) -> dict:
    """SMC on the ring tilted by a linear reward; ess_threshold 1: a group resamples at nearly every step."""
    return {"version": 1, "seed": 5, "nodes": {
        "model": {"kind": "model.gmm", "params": {"preset": "ring"}},
        "reward": {"kind": "reward.linear", "params": {"a": [1.0, 0.0]}},
        "sigmas": {"kind": "schedule.karras", "params": {"steps": 12, "sigma_min": 0.01, "sigma_max": 20.0}},
        "noise": {"kind": "latent.noise", "params": {"batch": particles * groups, "shape": [2]},
                  "inputs": {"sigmas": "sigmas"}},
        "solver": {"kind": "sampler.euler_ancestral"},
        "smc": {"kind": "search.smc", "params": {"particles": particles, "lam": 2.0, "ess_threshold": 1.0, **params},
                "inputs": {"denoise": "model", "sigmas": "sigmas", "sampler": "solver", "latent": "noise",
                           "reward": "reward"}}},
        "outputs": ["smc"]}


def search_node(wf: dict) -> str:
    return next(name for name, n in wf["nodes"].items() if n["kind"].startswith("search."))


def local_and_split(backend, wf: dict, tmp_path: Path, outputs: list[str] | None = None):
    """The local run and the RayBackend run of `wf` (fresh: nothing shared with earlier tests)."""
    backend.forget()
    local = Runtime(device="cpu", cache=False).run(wf, outputs=outputs, out_dir=tmp_path / "local")
    remote = Runtime(device="cpu", cache_dir=tmp_path / "cache", backend=backend).run(
        wf, outputs=outputs, out_dir=tmp_path / "ray")
    return local, remote


def node_report(result, node: str):
    return next(n for n in result.report.nodes if n.node == node)


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
    assert sample.cache == "miss" and sample.metrics == {"workers": 2, "resumed_from_steps": [0, 0]}
    assert sample.nfe == 6
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


def test_the_models_split_here_are_batch_invariant_row_by_row():
    """The condition for a split single call to be exact (split_denoiser.py): each row's x0 is the same in a batch of
    any size. model.gmm meets it down to single rows; model.digits (a network) for halves, not for single rows
    (BLAS picks another kernel for one row), which is why a digits search is split with max_batch."""
    wf = {"version": 1, "seed": 0, "nodes": {"gmm": {"kind": "model.gmm", "params": {"preset": "ring"}},
                                             "digits": {"kind": "model.digits"},
                                             "uncond": {"kind": "model.condition", "params": {"label": None},
                                                        "inputs": {"model": "digits"}}}, "outputs": ["gmm", "uncond"]}
    models = Runtime(device="cpu", cache=False).run(wf)
    gen = torch.Generator().manual_seed(0)
    for name, shape, parts in (("gmm", (2,), (2, 3, 64)), ("uncond", (8, 8), (2,))):
        x = 3 * torch.randn(64, *shape, generator=gen)
        sigma = torch.rand(64, generator=gen) * 10
        full = models[name](x, sigma)
        for n in parts:
            cut = torch.cat([models[name](a, b) for a, b in zip(x.tensor_split(n), sigma.tensor_split(n))])
            assert torch.equal(cut, full), (name, n)


@pytest.mark.parametrize("max_batch", [None, 3])
def test_smc_8_particles_over_2_actors_equals_the_local_run(backend, tmp_path, max_batch):
    """The strategy (rewards, weights, the resampling generator) runs in one task; only its denoiser calls are
    cut over the actors: rows in halves (max_batch None), or whole max_batch chunks (3 + 3 | 2: the actors
    evaluate [3, 3] and [2]), so resampling draws exactly what the local run draws."""
    wf = smc_workflow(8, max_batch=max_batch)
    local, remote = local_and_split(backend, wf, tmp_path)
    assert torch.equal(remote["smc"], local["smc"])
    split, alone = node_report(remote, "smc"), node_report(local, "smc")
    assert alone.metrics["resamplings"] >= 5  # the resampling generator is exercised
    assert {k: v for k, v in split.metrics.items() if k not in ("wall_s", "workers", "split_calls", "local_calls")} \
        == {k: v for k, v in alone.metrics.items() if k != "wall_s"}
    assert split.metrics["workers"] == 2 and split.metrics["split_calls"] == 12 and split.metrics["local_calls"] == 0
    assert split.nfe == alone.nfe == 12
    assert all(any(k.endswith(":out") for k in ray.get(w.resident.remote())) for w in backend.workers)


@pytest.mark.parametrize("name", SEARCH_WORKFLOWS)
def test_every_shipped_search_workflow_over_2_actors_equals_the_local_run(backend, tmp_path, name):
    """Best-of-N, beam, DTS, FKC, paths, rejection, rollover, SMC, SVDD, TDS, zero-order: the search node's output
    (and the metric after it) equal the local run's bit for bit. The digits SMC (a network) is split with
    max_batch, which is exact for any model; TDS differentiates through the denoiser, so its calls stay local."""
    wf = json.loads((WORKFLOWS / name).read_text())
    node = search_node(wf)
    if name == "search_digits_classifier.json":
        wf["nodes"][node]["params"]["max_batch"] = 32  # 128 rows: 4 chunks, two per actor
    outputs = [node] + [o for o in ("sliced_w2", "accuracy.accuracy") if o.split(".")[0] in wf["nodes"]]
    local, remote = local_and_split(backend, wf, tmp_path, outputs)
    for out in outputs:
        assert torch.equal(torch.as_tensor(remote[out]), torch.as_tensor(local[out])), out
    split = node_report(remote, node).metrics
    if name == "search_tds.json":
        assert split["local_calls"] > 0
    else:
        assert split["split_calls"] > 0 and split["local_calls"] == 0


def wait_until(predicate, timeout: float) -> float:
    """Seconds until predicate() held (polled); fails after `timeout`."""
    start = time.perf_counter()
    while not predicate():
        assert time.perf_counter() - start < timeout, "timed out"
        time.sleep(0.05)
    return time.perf_counter() - start


def cancel_mid_run(runtime: Runtime, wf: dict, node: str, after: float = 0.0, until=None
                   ) -> tuple[BaseException | None, float]:
    """Run wf in a thread and set its CancelToken `after` s once the driver waits for `node` (its inputs are
    done, so its task is running) and `until()` holds; (what the run raised, seconds from the cancel to the
    end of the run)."""
    token, raised, reached = CancelToken(), {}, threading.Event()

    def on_event(event) -> None:
        if isinstance(event, NodeStarted) and event.node == node:
            reached.set()

    def go() -> None:
        try:
            runtime.run(wf, cancel=token, on_event=on_event)
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            raised["e"] = e
    runner = threading.Thread(target=go)
    runner.start()
    assert reached.wait(timeout=120), f"the run never reached node '{node}'"
    time.sleep(after)
    if until is not None:
        wait_until(until, timeout=60)
    assert runner.is_alive(), "the run ended before the cancel: make the workflow longer"
    token.cancel()
    start = time.perf_counter()
    runner.join(timeout=60)
    return raised.get("e"), time.perf_counter() - start


@pytest.mark.parametrize("split", [True, False])
def test_a_cancel_mid_run_cancels_the_submitted_tasks_promptly(backend, tmp_path, split):
    """split: the sample node over the actors (each actor call checks its cancel flag between steps); else a
    plain node task (interrupted by ray.cancel). The run raises RunCancelled within a second; the actors (a
    single-threaded actor answers only after its current call) and the cluster's CPUs are free soon after;
    nothing of the cancelled run is remembered: the same workflow then runs to the local result."""
    b = backend if split else RayBackend()
    b.forget()
    wf = workflow(20000, 1000)  # ~10 s or more per chunk: the cancel comes long before the end
    runtime = Runtime(device="cpu", cache_dir=tmp_path, backend=b)
    worker_pids(backend)  # the actors are up (a cold start takes seconds here)
    raised, took = cancel_mid_run(runtime, wf, "sample", after=1.0)
    assert isinstance(raised, RunCancelled), raised
    assert took < 1.0
    wait_until(lambda: ray.available_resources().get("CPU", 0) == 2, timeout=5)
    if split:
        pids = ray.get([w.pid.remote() for w in backend.workers], timeout=3)  # free: answered within 3 s
        assert pids == worker_pids(backend)
    for out_ref, entry_ref in b._refs.values():  # only finished work is remembered: a re-run resubmits the rest
        assert ray.wait([out_ref], timeout=0)[0] and ray.get(entry_ref).cache == "miss"
    small = workflow(8, 4)
    assert torch.equal(runtime.run(small)["sample"], Runtime(device="cpu", cache=False).run(small)["sample"])


def test_a_split_sample_checkpoints_each_chunk_and_a_rerun_resumes_bit_for_bit(backend, tmp_path):
    """Each actor checkpoints its chunk under the node key and its rows (the sample node's own policy); a run
    cancelled mid-way leaves one checkpoint per chunk, the re-run resumes both and equals the local run; the
    stored output then discards them."""
    backend.forget()
    wf = workflow(4000, 2000)
    wf["nodes"]["sample"]["params"] = {"checkpoint_every": 25, "checkpoint_seconds": None}
    root = tmp_path / "cache" / "checkpoints"
    runtime = Runtime(device="cpu", cache_dir=tmp_path / "cache", backend=backend)
    worker_pids(backend)

    def saved() -> list[int]:
        files = sorted(root.glob("*/*.safetensors")) if root.is_dir() else []
        return [int(p.stem) for p in files]
    raised, _ = cancel_mid_run(runtime, wf, "sample", until=lambda: len(saved()) == 2 and min(saved()) >= 50)
    assert isinstance(raised, RunCancelled), raised
    worker_pids(backend)  # answered once both actors have stopped (a last checkpoint may land until then)
    folders = sorted(p.name for p in root.iterdir())
    assert [f.split(".")[1] for f in folders] == ["rows0-2000of4000", "rows2000-4000of4000"]
    steps = [int(next((root / f).glob("*.safetensors")).stem) for f in folders]  # one file per chunk: its latest
    resumed = runtime.run(wf)
    local = Runtime(device="cpu", cache=False).run(wf)
    assert torch.equal(resumed["sample"], local["sample"])
    metrics = node_report(resumed, "sample").metrics
    assert metrics["resumed_from_steps"] == steps and min(steps) >= 50 and max(steps) < 2000
    assert not any(root.iterdir())  # the output is stored: the chunks' checkpoints are gone
