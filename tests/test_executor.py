"""The executor: pruning to the requested outputs, event order, the saved report, overrides,
node failures, cancellation from another thread, and one Runtime shared by several threads."""
from __future__ import annotations

import json
import threading
import time

import pytest
import torch

import helpers_nodes as H
from samplegraph import CancelToken, NodeRunError, RunCancelled, Runtime, Workflow, WorkflowError
from samplegraph.runtime.cache import DiskCache
from samplegraph.runtime.events import (CacheDiscarded, NodeFinished, NodeStarted, RunFinished, RunStarted,
                                        StepProgress)
from samplegraph.runtime.values import nbytes


def runtime(cache_dir=None, **kw) -> Runtime:
    return Runtime(device="cpu", registry=H.REGISTRY, cache_dir=cache_dir, **kw)


def statuses(result) -> dict[str, str]:
    return {n.node: n.cache for n in result.report.nodes}


@pytest.fixture(autouse=True)
def _reset():
    H.reset()


# ---------------------------------------------------------------- pruning


def pruning_doc() -> dict:
    return {"nodes": {
        "a": {"kind": "test.const", "params": {"value": 2.0, "tag": "a"}},
        "sa": {"kind": "test.scale", "inputs": {"x": "a"}, "params": {"tag": "sa"}},
        "side": {"kind": "test.sink", "inputs": {"x": "a"}, "params": {"tag": "side"}},
        "boom": {"kind": "test.fail", "inputs": {"x": "a"}},
        "other": {"kind": "test.const", "params": {"tag": "other"}},
    }, "outputs": ["sa", "boom"]}


def test_only_ancestors_of_requested_outputs_run():
    result = runtime().run(pruning_doc(), outputs=["sa"])
    assert result.outputs == {"sa": 4.0}
    assert [n.node for n in result.report.nodes] == ["a", "sa"]
    assert H.RUNS == {"a": 1, "sa": 1}  # not the side effect, not the failing node, not "other"


def test_workflow_outputs_are_the_default_and_a_failing_needed_node_fails_the_run():
    with pytest.raises(NodeRunError) as info:
        runtime().run(pruning_doc())
    assert info.value.node == "boom" and info.value.kind == "test.fail"
    assert "ValueError: this node must not run" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


def test_outputs_subset_may_name_ports_and_nodes_outside_the_workflow_outputs():
    doc = {"nodes": {"t": {"kind": "test.tensor", "params": {"n": 3}}, "mm": {"kind": "test.minmax", "inputs": {"x": "t"}},
                     "c": {"kind": "test.const", "params": {"tag": "c"}}}, "outputs": ["c"]}
    result = runtime().run(doc, outputs=["mm.hi", "t"])
    assert set(result.outputs) == {"mm.hi", "t"} and result["mm.hi"] == 2.0
    assert H.ran("c") == 0


def test_requested_output_naming_no_node_is_a_workflow_error():
    with pytest.raises(WorkflowError) as info:
        runtime().run(pruning_doc(), outputs=["saa"])
    assert "'saa'" in str(info.value) and "did you mean 'sa'?" in str(info.value)
    assert H.RUNS == {}


def test_execution_order_is_topological():
    doc = {"nodes": {"z": {"kind": "test.const"}, "y": {"kind": "test.scale", "inputs": {"x": "z"}},
                     "x": {"kind": "test.scale", "inputs": {"x": "y"}},
                     "w": {"kind": "test.add", "inputs": {"xs": ["x", "z", "y"]}}}, "outputs": ["w"]}
    order = [n.node for n in runtime().run(doc).report.nodes]
    assert order == ["z", "y", "x", "w"]


# ---------------------------------------------------------------- events and report


def events_doc() -> dict:
    return {"nodes": {"c": {"kind": "test.const", "params": {"value": 1.0}},
                      "l": {"kind": "test.loop", "inputs": {"x": "c"}, "params": {"steps": 5, "sleep_s": 0}},
                      "f": {"kind": "test.nfe", "params": {"calls": 7}},
                      "t": {"kind": "test.tensor"}},
            "outputs": ["l", "f", "t"]}


def test_events_arrive_in_order():
    events = []
    result = runtime().run(events_doc(), on_event=events.append)
    assert isinstance(events[0], RunStarted) and events[0].total == 4
    assert isinstance(events[-1], RunFinished) and events[-1].report is result.report
    body = events[1:-1]
    order = [n.node for n in result.report.nodes]
    i = 0
    for index, node_id in enumerate(order):
        start = body[i]
        assert isinstance(start, NodeStarted) and (start.node, start.index, start.total) == (node_id, index, 4)
        i += 1
        steps = []
        while isinstance(body[i], StepProgress):
            assert body[i].node == node_id
            steps.append((body[i].step, body[i].total))
            i += 1
        assert steps == ([(k, 5) for k in range(1, 6)] if node_id == "l" else [])
        end = body[i]
        assert isinstance(end, NodeFinished) and end.node == node_id and end.cache == "miss" and end.wall_s >= 0
        i += 1
    assert i == len(body)


def test_report_is_saved_with_per_node_time_cache_nfe_and_device(tmp_path):
    rt = runtime()
    result = rt.run(events_doc(), out_dir=tmp_path)
    assert result.report_path == tmp_path / "report.json"
    saved = json.loads(result.report_path.read_text())
    assert saved["status"] == "ok" and saved["device"] == "cpu" and saved["nfe"] == 7
    nodes = {n["node"]: n for n in saved["nodes"]}
    assert set(nodes) == {"c", "l", "f", "t"}
    for n in nodes.values():
        assert n["wall_s"] >= 0 and n["cache"] == "miss" and isinstance(n["nfe"], int)
    assert nodes["f"]["nfe"] == 7 and nodes["f"]["metrics"] == {"note": "hello"}
    assert nodes["t"]["device"] == "cpu" and nodes["t"]["outputs"] == {"out": "Tensor(4, 2) float32 cpu"}
    assert saved["outputs"]["l"] == 6.0  # a number, not its repr
    again = json.loads(rt.run(events_doc(), out_dir=tmp_path).report_path.read_text())
    assert {n["cache"] for n in again["nodes"]} == {"memory"} and again["nfe"] == 0


def test_no_report_file_without_out_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runtime().run(events_doc())
    assert result.report_path is None and not (tmp_path / "report.json").exists()


# ---------------------------------------------------------------- overrides


def test_with_overrides_returns_a_changed_copy():
    wf = Workflow.from_dict(pruning_doc())
    changed = wf.with_overrides({"a.value": 5.0, "sa.factor": 3})
    assert changed.nodes["a"].params["value"] == 5.0 and changed.nodes["sa"].params["factor"] == 3
    assert wf.nodes["a"].params["value"] == 2.0 and "factor" not in wf.nodes["sa"].params
    assert runtime().run(changed, outputs=["sa"])["sa"] == 15.0


def test_runtime_run_applies_overrides():
    assert runtime().run(pruning_doc(), outputs=["sa"], overrides={"a.value": -1.0})["sa"] == -2.0


def test_override_of_unknown_node_is_a_located_error_listing_all():
    wf = Workflow.from_dict(pruning_doc())
    with pytest.raises(WorkflowError) as info:
        wf.with_overrides({"aa.value": 1.0, "nodot": 2, "sa.factor": 2.0, "ghost.x": 0})
    messages = [str(p) for p in info.value.problems]
    assert len(messages) == 3
    assert any("'aa.value'" in m and "names no node" in m and "did you mean 'a'?" in m for m in messages)
    assert any("'ghost.x'" in m and "names no node" in m for m in messages)
    assert any("'nodot'" in m and "node.param" in m for m in messages)


def test_override_with_bad_value_or_param_is_located_by_validation():
    with pytest.raises(WorkflowError) as info:
        runtime().run(pruning_doc(), overrides={"a.value": 1000.0, "sa.facotr": 1.0})
    located = {(p.node, p.where) for p in info.value.problems}
    assert {("a", "param 'value'"), ("sa", "param 'facotr'")} <= located
    assert H.RUNS == {}


# ---------------------------------------------------------------- failures


def test_failed_node_stores_nothing_and_upstream_results_stay_cached(tmp_path):
    doc = {"nodes": {"a": {"kind": "test.const", "params": {"tag": "a"}},
                     "boom": {"kind": "test.fail", "inputs": {"x": "a"}}}, "outputs": ["boom"]}
    rt = runtime(tmp_path)
    for _ in range(2):
        with pytest.raises(NodeRunError):
            rt.run(doc)
    assert H.RUNS == {"a": 1, "fail": 2}
    assert len(rt.memory) == 1 and len(DiskCache(tmp_path).entries()) == 1


def test_node_returning_the_wrong_type_is_a_node_run_error():
    from samplegraph import Node, Registry, node

    @node("test.liar")
    class Liar(Node):
        """Declares float, returns a str."""

        def run(self) -> float:
            return "not a float"  # type: ignore[return-value]

    rt = Runtime(device="cpu", registry=Registry([Liar]))
    with pytest.raises(NodeRunError) as info:
        rt.run({"nodes": {"l": {"kind": "test.liar"}}, "outputs": ["l"]})
    assert "output 'out' should be float" in str(info.value) and "returned str" in str(info.value)
    assert len(rt.memory) == 0


# ---------------------------------------------------------------- cancellation


def loop_doc(steps: int, signal_at: int = -1, sleep_s: float = 0.002) -> dict:
    return {"nodes": {"c": {"kind": "test.const", "params": {"tag": "c"}},
                      "l": {"kind": "test.loop", "inputs": {"x": "c"},
                            "params": {"steps": steps, "sleep_s": sleep_s, "signal_at": signal_at}},
                      "after": {"kind": "test.scale", "inputs": {"x": "l"}, "params": {"tag": "after"}}},
            "outputs": ["after"]}


def cancel_when(tag: str, token: CancelToken) -> threading.Thread:
    def wait_then_cancel() -> None:
        assert H.signal(tag).wait(timeout=30)
        token.cancel()

    thread = threading.Thread(target=wait_then_cancel, daemon=True)
    thread.start()
    return thread


def test_cancel_from_another_thread_stops_a_long_loop_inside_the_node(tmp_path):
    rt = runtime(tmp_path)
    token = CancelToken()
    events = []
    canceller = cancel_when("loop", token)
    start = time.perf_counter()
    with pytest.raises(RunCancelled) as info:
        rt.run(loop_doc(steps=100_000, signal_at=5), cancel=token, on_event=events.append, out_dir=tmp_path / "o")
    canceller.join()
    assert time.perf_counter() - start < 20  # 100k steps of 2 ms would take over 200 s
    assert "'l'" in str(info.value)
    progress = [e.step for e in events if isinstance(e, StepProgress)]
    assert 5 <= progress[-1] < 100_000 and progress == sorted(progress)
    assert H.ran("loop.completed") == 0 and H.ran("after") == 0
    assert not any(isinstance(e, RunFinished) for e in events)
    saved = json.loads((tmp_path / "o" / "report.json").read_text())  # issue 9: a cancelled run is reported
    assert saved["status"] == "cancelled" and "l" not in [n["node"] for n in saved["nodes"]]


def test_cancel_is_seen_between_nodes():
    """`s` never checks cancellation; a cancel that arrives while it runs stops the run before `after`."""
    doc = {"nodes": {"s": {"kind": "test.sleep", "params": {"seconds": 0.05}},
                     "after": {"kind": "test.scale", "inputs": {"x": "s"}, "params": {"tag": "after"}}},
           "outputs": ["after"]}
    token = CancelToken()
    events = []

    def cancel_on_start(event) -> None:
        events.append(event)
        if isinstance(event, NodeStarted) and event.node == "s":
            canceller = threading.Thread(target=token.cancel)
            canceller.start()
            canceller.join()

    with pytest.raises(RunCancelled) as info:
        runtime().run(doc, cancel=token, on_event=cancel_on_start)
    assert "before node 'after'" in str(info.value)
    assert H.ran("sleep") == 1 and H.ran("after") == 0
    assert [e.node for e in events if isinstance(e, NodeFinished)] == ["s"]


def test_cancelled_before_start_runs_nothing():
    token = CancelToken()
    token.cancel()
    with pytest.raises(RunCancelled):
        runtime().run(loop_doc(steps=3), cancel=token)
    assert H.RUNS == {}


def test_cache_is_valid_after_a_cancelled_run(tmp_path):
    rt = runtime(tmp_path)
    token = CancelToken()
    cancel_when("loop", token)
    with pytest.raises(RunCancelled):
        rt.run(loop_doc(steps=200, signal_at=3), cancel=token)
    assert len(rt.memory) == 1 and len(DiskCache(tmp_path).entries()) == 1  # only "c", which finished
    events = []
    result = rt.run(loop_doc(steps=200, signal_at=3), on_event=events.append)
    assert statuses(result) == {"c": "memory", "l": "miss", "after": "miss"}
    assert result["after"] == (200 + 1.0) * 2
    fresh = runtime(tmp_path).run(loop_doc(steps=200, signal_at=3), on_event=events.append)
    assert statuses(fresh) == dict.fromkeys(["c", "l", "after"], "disk") and fresh["after"] == 402.0
    assert not any(isinstance(e, CacheDiscarded) for e in events)


# ---------------------------------------------------------------- threads


def thread_doc(value: float, factor: float) -> dict:
    return {"nodes": {"t": {"kind": "test.tensor", "params": {"n": 2000, "width": 32, "value": value}},
                      "u": {"kind": "test.tensor_scale", "inputs": {"x": "t"}, "params": {"factor": factor}},
                      "w": {"kind": "test.tensor_scale", "inputs": {"x": "u"}, "params": {"factor": 0.5}},
                      "n": {"kind": "test.seeded", "params": {"n": 64}},
                      "s": {"kind": "test.tensor_sum", "inputs": {"x": "w"}},
                      "ns": {"kind": "test.tensor_sum", "inputs": {"x": "n"}}},
            "outputs": ["w", "s", "ns"]}


DOCS = [thread_doc(0.0, 1.0), thread_doc(0.0, 1.0), thread_doc(1.0, 1.0), thread_doc(0.0, 3.0)]


def check_memory_accounting(rt: Runtime) -> None:
    items = rt.memory._items
    assert rt.memory.nbytes == sum(size for _, size in items.values()) <= rt.memory.max_bytes
    assert all(size == sum(nbytes(v) for v in entry.outputs.values()) for entry, size in items.values())


def test_threads_sharing_one_runtime_match_sequential_runs_and_keep_caches_sound(tmp_path):
    expected = [runtime(cache=False).run(doc, seed=7) for doc in DOCS]
    # a memory bound that holds about two tensors forces evictions while threads run
    rt = runtime(tmp_path / "cache", memory_cache_bytes=2 * 2000 * 32 * 4 + 1000)
    barrier = threading.Barrier(len(DOCS))
    results: dict[int, list] = {i: [] for i in range(len(DOCS))}
    errors = []

    def work(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(5):
                results[i].append(rt.run(DOCS[i], seed=7))
        except BaseException as e:  # reported below, with its thread
            errors.append((i, e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(DOCS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for i, runs in results.items():
        assert len(runs) == 5
        for r in runs:
            assert torch.equal(r["w"], expected[i]["w"]) and r["s"] == expected[i]["s"] and r["ns"] == expected[i]["ns"]
    check_memory_accounting(rt)
    events = []
    for i, doc in enumerate(DOCS):  # every disk entry written concurrently reads back intact
        r = runtime(tmp_path / "cache").run(doc, seed=7, on_event=events.append)
        assert set(statuses(r).values()) == {"disk"}
        assert torch.equal(r["w"], expected[i]["w"]) and r["s"] == expected[i]["s"]
    assert not any(isinstance(e, CacheDiscarded) for e in events)


# ---------------------------------------------------------------- work in flight


def shared_prefix(tag: str, seconds: float, factor: float) -> dict:
    """A slow node every run shares (same key), then a node of this run's own."""
    return {"nodes": {"slow": {"kind": "test.sleep", "params": {"seconds": seconds, "tag": tag}},
                      "own": {"kind": "test.scale", "inputs": {"x": "slow"}, "params": {"factor": factor}}},
            "outputs": ["own"]}


def run_together(rt: Runtime, docs: list[dict], tokens: list[CancelToken | None] | None = None) -> list:
    """Run docs in threads on one Runtime, released at once; each result or the exception it raised."""
    barrier, out = threading.Barrier(len(docs)), [None] * len(docs)
    tokens = tokens or [None] * len(docs)

    def work(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            out[i] = rt.run(docs[i], cancel=tokens[i])
        except BaseException as e:  # returned to the test
            out[i] = e

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(docs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def test_runs_sharing_a_node_in_flight_compute_it_once():
    """Three concurrent runs on one Runtime that share a slow node: it runs once; the others wait for it and
    take it from memory (reported as a memory hit), and their own nodes still run."""
    H.reset()
    results = run_together(runtime(), [shared_prefix("inflight", 0.4, f) for f in (2.0, 3.0, 4.0)])
    assert [r["own"] for r in results] == [2.0, 3.0, 4.0]
    assert H.ran("inflight") == 1 and H.ran("scale") == 3
    assert sorted(statuses(r)["slow"] for r in results) == ["memory", "memory", "miss"]


def test_a_failed_computation_in_flight_leaves_the_waiting_run_to_compute_it():
    """The run that claimed the shared node fails in it: the waiting run wakes, claims it and computes it
    itself (no deadlock, no result lost)."""
    doc = {"nodes": {"flaky": {"kind": "test.flaky", "params": {"seconds": 0.3, "tag": "flaky"}}},
           "outputs": ["flaky"]}
    results = run_together(runtime(), [doc, doc])
    assert sorted(type(r).__name__ for r in results) == ["NodeRunError", "RunResult"]
    assert next(r for r in results if not isinstance(r, Exception))["flaky"] == 1.0
    assert H.ran("flaky") == 2


def test_a_run_waiting_for_another_runs_node_can_be_cancelled():
    """A run waiting on a node that another run computes sees its cancel token within the poll interval; the
    computing run finishes as if alone."""
    rt, slow, token = runtime(), shared_prefix("held", 1.5, 2.0), CancelToken()
    first: list = []
    owner = threading.Thread(target=lambda: first.append(rt.run(slow)))
    owner.start()
    deadline = time.monotonic() + 10
    while H.ran("held") == 0 and time.monotonic() < deadline:  # the owner is inside the slow node
        time.sleep(0.01)
    threading.Timer(0.3, token.cancel).start()
    start = time.perf_counter()
    with pytest.raises(RunCancelled, match="while waiting for node 'slow', which another run computes"):
        rt.run(slow, cancel=token)
    assert time.perf_counter() - start < 1.0  # it did not sit out the owner's 1.5 s
    owner.join(timeout=30)
    assert first[0]["own"] == 2.0 and H.ran("held") == 1
