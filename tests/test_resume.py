"""Resumable sampling: checkpoints of `sample`, bit-identical resume after cancel, SIGINT and SIGKILL."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from samplegraph import Runtime
from samplegraph.graph.errors import NodeRunError, RunCancelled
from samplegraph.nodes.core.state import State, state_from_tensors, state_tensors
from samplegraph.runtime.api import CancelToken
from samplegraph.runtime.checkpoints import CheckpointStore
from samplegraph.runtime.events import StepProgress

REPO_PARENT = Path(__file__).resolve().parents[2]  # the folder that holds the package `samplegraph`


def workflow(steps: int, every: int | None, guided: bool = False, solver: str = "sampler.dpmpp_2m_sde") -> dict:
    """A GMM workflow whose sample node uses a multistep solver (history) or APG guidance (memory)."""
    nodes = {
        "model": {"kind": "model.gmm", "params": {"preset": "ring", "modes": 4, "std": 0.3,
                                                  "classes": [0, 0, 1, 1]}},
        "cond": {"kind": "model.gmm_condition", "params": {"label": 1}, "inputs": {"model": "model"}},
        "uncond": {"kind": "model.gmm_condition", "inputs": {"model": "model"}},
        "apg": {"kind": "guidance.apg", "params": {"scale": 3.0, "momentum": -0.5},
                "inputs": {"cond": "cond", "uncond": "uncond"}},
        "sigmas": {"kind": "schedule.karras", "params": {"steps": steps}},
        "noise": {"kind": "latent.noise", "params": {"batch": 64, "shape": [2]}, "inputs": {"sigmas": "sigmas"}},
        "solver": {"kind": solver},
        "sample": {"kind": "sample", "params": {"checkpoint_every": every, "checkpoint_seconds": None},
                   "inputs": {"denoise": "apg" if guided else "model", "sigmas": "sigmas", "sampler": "solver",
                              "latent": "noise"}},
        "save": {"kind": "io.save_tensor", "params": {"path": "x.safetensors"}, "inputs": {"x": "sample"}},
    }
    return {"version": 1, "seed": 3, "nodes": nodes, "outputs": ["save"]}


def cancel_at(step: int, token: CancelToken):
    def on_event(e) -> None:  # noqa: ANN001
        if isinstance(e, StepProgress) and e.node == "sample" and e.step >= step:
            token.cancel()
    return on_event


def sample_metrics(report_path: Path) -> dict:
    report = json.loads(report_path.read_text())
    return next(n for n in report["nodes"] if n["node"] == "sample")["metrics"]


def test_state_tensors_round_trip_keeps_every_field():
    g = torch.Generator().manual_seed(0)
    sigmas = torch.linspace(1, 0, 5, dtype=torch.float64)
    s = State(x=torch.randn(3, 2, generator=g), sigmas=sigmas, step=torch.tensor([1, 2, 2]),
              particle=torch.tensor([4, 0, 9]), denoised=torch.randn(3, 2, generator=g),
              history=(torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g)),
              memory=(torch.randn(3, 2, generator=g),))
    back = state_from_tensors(state_tensors(s), sigmas)
    for name in ("x", "step", "particle", "denoised"):
        assert torch.equal(getattr(back, name), getattr(s, name)), name
    assert all(map(torch.equal, back.history, s.history)) and len(back.history) == 2
    assert all(map(torch.equal, back.memory, s.memory)) and len(back.memory) == 1
    assert state_from_tensors(state_tensors(s.replace(denoised=None, history=(), memory=())), sigmas).denoised is None


def test_checkpoint_store_keeps_latest_and_drops_corrupt(tmp_path):
    cps = CheckpointStore(tmp_path).for_key("k" * 64)
    cps.save(3, {"x": torch.zeros(2)})
    cps.save(6, {"x": torch.ones(2)})
    assert [p.name for p in cps.folder.iterdir()] == ["6.safetensors"]
    step, tensors = cps.load_latest()
    assert step == 6 and torch.equal(tensors["x"], torch.ones(2))
    path = cps.folder / "6.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip a tensor byte: the digest must catch it
    path.write_bytes(bytes(data))
    assert cps.load_latest() is None and not path.exists()
    assert CheckpointStore(tmp_path).for_key("j" * 64).load_latest() is None  # another key sees nothing
    cps.save(1, {"x": torch.zeros(2)})
    cps.discard()
    assert not cps.folder.exists()


@pytest.mark.parametrize("guided", [False, True], ids=["history", "apg-memory"])
def test_cancelled_run_resumes_bit_identical(tmp_path, guided):
    every, stop = 5, 17
    ref = Runtime(cache=False).run(workflow(40, every, guided), out_dir=tmp_path / "ref")
    rt = Runtime(cache_dir=tmp_path / "cache")
    token = CancelToken()
    with pytest.raises(RunCancelled):
        rt.run(workflow(40, every, guided), out_dir=tmp_path / "a", cancel=token, on_event=cancel_at(stop, token))
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["status"] == "cancelled" and "sample" not in [n["node"] for n in report["nodes"]]
    assert "noise" in [n["node"] for n in report["nodes"]]
    fresh = Runtime(cache_dir=tmp_path / "cache")  # a new process's view: nothing in memory
    fresh.run(workflow(40, every, guided), out_dir=tmp_path / "b")
    assert sample_metrics(tmp_path / "b" / "report.json")["resumed_from_step"] == 15  # stop - 15 <= every
    assert (tmp_path / "b" / "x.safetensors").read_bytes() == Path(ref["save"]).read_bytes()
    assert not (tmp_path / "cache" / "checkpoints").exists() or not any((tmp_path / "cache" / "checkpoints").iterdir())


def test_checkpoint_interval_is_not_in_the_cache_key(tmp_path):
    rt = Runtime(cache_dir=tmp_path / "cache")
    rt.run(workflow(10, 2), out_dir=tmp_path / "a")
    result = rt.run(workflow(10, None), out_dir=tmp_path / "b")
    assert next(n for n in result.report.nodes if n.node == "sample").cache == "memory"


def test_no_checkpoints_without_disk_cache(tmp_path):
    token = CancelToken()
    with pytest.raises(RunCancelled):
        Runtime(cache=False).run(workflow(20, 1), cancel=token, on_event=cancel_at(5, token), out_dir=tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["status"] == "cancelled"
    assert not list(tmp_path.rglob("checkpoints"))


def test_failed_run_writes_report(tmp_path):
    wf = workflow(10, None)
    # CFG++ on an SDE solver is refused when the sample node runs (NodeRunError), after noise finished
    wf["nodes"]["apg"] = {"kind": "guidance.cfg_pp", "inputs": {"cond": "cond", "uncond": "uncond"}}
    wf["nodes"]["sample"]["inputs"]["denoise"] = "apg"
    with pytest.raises(NodeRunError):
        Runtime(cache=False).run(wf, out_dir=tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "failed" and "noise" in [n["node"] for n in report["nodes"]]


def cli(wf: Path, cache: Path, out: Path, niceness: int = 0) -> subprocess.Popen:
    """The CLI run of `wf` in a child process, `niceness` > 0 lowering its priority (see interrupt_cli_run)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_PARENT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "samplegraph.runtime.cli", "run", str(wf), "--cache-dir", str(cache),
                             "--out", str(out), "--quiet", "--threads", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: child_setup(niceness))


def child_setup(niceness: int) -> None:
    """In the CLI child before exec: SIGINT back to its default (a test run started as a background job of a
    non-interactive shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt), and a
    lower priority when niceness > 0."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if niceness:
        os.nice(niceness)


def latest_checkpoint(cache: Path) -> int | None:
    steps = [int(p.stem) for p in (cache / "checkpoints").glob("*/*.safetensors") if p.stem.isdigit()]
    return max(steps, default=None)


def interrupt_cli_run(wf: Path, cache: Path, out: Path, sig: signal.Signals, steps: int, every: int) -> tuple:
    """Start the CLI, signal it once its checkpoint passes a random step, and wait: (returncode, stderr).

    The target is a checkpoint, not a delay: on a loaded machine this process may be descheduled for
    longer than any fixed sleep, so the signal is sent as soon as it sees the step it chose, and the child
    runs at the lowest priority so that under contention it is the one that waits (idle, it runs at full speed)."""
    target = every * random.randint(1, steps // every // 2)  # a random checkpoint in the first half
    proc = cli(wf, cache, out, niceness=19)
    deadline = time.monotonic() + 60
    while (latest_checkpoint(cache) or 0) < target:
        if proc.poll() is not None:  # finished (or failed) before this process saw the target checkpoint
            break
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.002)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_killed_cli_run_resumes_bit_identical(tmp_path, sig):
    steps, every = 3000, 50
    doc = workflow(steps, every, solver="sampler.euler_ancestral")  # ~0.3 ms a step: about a second of sampling
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(doc))
    ref = Runtime(cache=False).run(doc, out_dir=tmp_path / "ref")
    for attempt in range(3):  # a run that ends before the signal lands (a starved test process) is retried
        code, err = interrupt_cli_run(wf, tmp_path / f"cache{attempt}", tmp_path / "a", sig, steps, every)
        if code != 0:
            break
    cache = tmp_path / f"cache{attempt}"
    if sig == signal.SIGINT:
        assert code == 130, err
        report = json.loads((tmp_path / "a" / "report.json").read_text())
        assert report["status"] == "cancelled" and "noise" in [n["node"] for n in report["nodes"]]
    else:
        assert code == -signal.SIGKILL
    last = latest_checkpoint(cache)
    assert last is not None and 0 < last < steps, "interrupted after sampling ended: make it longer"
    again = cli(wf, cache, tmp_path / "b")
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    # the re-run starts at the last checkpoint on disk, which is fewer than `every` steps behind the kill
    assert sample_metrics(tmp_path / "b" / "report.json")["resumed_from_step"] == last
    assert (tmp_path / "b" / "x.safetensors").read_bytes() == Path(ref["save"]).read_bytes()
