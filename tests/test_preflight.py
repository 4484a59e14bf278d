"""Problems found before any compute is spent (issue 9, item 3): unwritable output folders, latents
that cannot fit in memory (a located workflow error naming the parameter), and allocation failures
inside a node, which become a located NodeRunError naming the node and the size asked for."""
from __future__ import annotations

import pytest
import torch

from samplegraph import Node, Registry, Runtime, node
from samplegraph.graph.errors import NodeRunError, WorkflowError
from samplegraph.runtime import preflight
from samplegraph.runtime.events import NodeStarted
from samplegraph.runtime.executor import out_of_memory
from samplegraph.runtime.preflight import OutputDirError

QUICK = "workflows/quickstart.json"
SMALL = {"noise.batch": 64, "sigmas.steps": 4}


@pytest.fixture
def rt() -> Runtime:
    return Runtime(device="cpu", cache=False)


def started(events: list) -> list[str]:
    return [e.node for e in events if isinstance(e, NodeStarted)]


def test_an_unwritable_out_dir_is_reported_before_anything_runs(rt, tmp_path):
    (tmp_path / "f").touch()
    events: list = []
    with pytest.raises(OutputDirError, match=rf"output folder '{tmp_path}/f/out' is unusable: cannot create it"):
        rt.run(QUICK, overrides=SMALL, out_dir=tmp_path / "f" / "out", on_event=events.append)
    assert started(events) == []


def test_an_io_node_writing_into_an_unusable_folder_is_reported_before_anything_runs(rt, tmp_path):
    (tmp_path / "f").touch()
    events: list = []
    target = tmp_path / "f" / "x.safetensors"
    with pytest.raises(OutputDirError, match=rf"node 'save' would write '{target}'.*it exists and is not a directory"):
        rt.run(QUICK, overrides={**SMALL, "save.path": str(target)}, out_dir=tmp_path / "out",
               on_event=events.append)
    assert started(events) == []


def test_a_latent_that_cannot_fit_is_a_located_error_before_anything_runs(rt, tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "available_bytes", lambda device: 1_000_000)
    events: list = []
    with pytest.raises(WorkflowError) as err:
        rt.run(QUICK, overrides={**SMALL, "noise.batch": 40_000}, on_event=events.append, out_dir=tmp_path)
    (problem,) = err.value.problems
    assert (problem.node, problem.where) == ("noise", "param 'batch'")
    assert "needs about 2.6 MB (40000 x [2] float32 noise), but only 1.0 MB of CPU memory" in problem.message
    assert problem.hint == "lower 'batch' or 'shape'" and started(events) == []
    assert rt.run(QUICK, overrides=SMALL, out_dir=tmp_path).report.status == "ok"  # 64 particles fit


def test_available_cpu_memory_is_a_positive_figure_no_larger_than_meminfo():
    free = preflight.available_bytes(torch.device("cpu"))
    assert free is not None and 0 < free <= preflight.meminfo_available()


@node("test.huge")
class Huge(Node):
    """Asks for a petabyte: the allocator refuses at once, nothing is touched."""

    def run(self) -> torch.Tensor:
        return torch.empty(2 ** 48, dtype=torch.float32)  # 2**50 bytes: beyond any address space


def test_an_allocation_failure_is_a_located_node_error_with_the_size():
    rt = Runtime(device="cpu", registry=Registry([Huge]), cache=False)
    with pytest.raises(NodeRunError) as err:
        rt.run({"nodes": {"big": {"kind": "test.huge"}}, "outputs": ["big"]})
    msg = str(err.value)
    assert msg.startswith("node 'big' (test.huge): out of memory on cpu: an allocation of 1125.9 TB failed")
    assert "internal error" not in msg and "lower this node's batch" in msg


def test_a_cuda_out_of_memory_error_names_the_requested_size():
    e = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79 GiB")
    assert out_of_memory(e, torch.device("cuda:0")).startswith("out of memory on cuda:0: an allocation of 20.00 GiB")
    assert out_of_memory(RuntimeError("shape mismatch"), torch.device("cpu")) is None


@pytest.mark.gpu
def test_a_cuda_allocation_failure_is_a_located_node_error():
    rt = Runtime(device="cuda", registry=Registry([Huge]), cache=False)
    with pytest.raises(NodeRunError, match=r"node 'big' \(test.huge\): out of memory on cuda(:0)?: an allocation of"):
        rt.run({"nodes": {"big": {"kind": "test.huge"}}, "outputs": ["big"]})
