"""What keeps the per-node cost of a run low without changing what a run does: keys written field
by field (the same bytes as the canonical key document), one topological order per validation
(networkx only to locate a cycle), no events built without a listener, no NodeContext for nodes
that take none, no hashing in runs without caches, and work linear in the number of nodes."""
from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import networkx as nx
import pytest

import helpers_nodes as H
from samplegraph import Runtime, Workflow, WorkflowError
from samplegraph.graph import validate as V
from samplegraph.graph.hashing import KeyWriter, canonical_json, node_key
from samplegraph.nodes.api import Registry
from samplegraph.runtime import executor as X

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _reset():
    H.reset()


def runtime(**kw) -> Runtime:
    return Runtime(device="cpu", registry=H.REGISTRY, **kw)


def key_document_hash(kind, version, params, inputs, seed, external) -> str:
    """The key as first defined: SHA-256 of the canonical JSON of the whole document."""
    doc = {"kind": kind, "version": version, "params": params, "inputs": inputs}
    if seed is not None:
        doc["seed"] = seed
    if external is not None:
        doc["external"] = external
    return hashlib.sha256(canonical_json(doc)).hexdigest()


@pytest.mark.parametrize("doc", [
    ("a.b", 1, {}, {}, None, None),
    ("sampler.euler", 3, {"z": [1, 2.5, None], "a": {"ü": "é\ud800", "b": True}},
     {"x": "k:out", "xs": ["a:b", "c:d"]}, 2**63 - 1, [10, 123456789]),
    ("k.k", 2, {"v": float("nan"), "w": -0.0, "u": 1e300, "s": "q\"\\\n"}, {}, 0, {"f": "g"}),
    ("k.k", 2, {}, {"x": "q"}, None, []),  # an empty (not None) external state enters the key
])
def test_keys_written_field_by_field_are_the_canonical_document_hash(doc):
    assert node_key(*doc) == KeyWriter(doc[0], doc[1]).key(*doc[2:]) == key_document_hash(*doc)


def random_dag_doc(rng: random.Random, n: int) -> dict:
    """n nodes with shuffled ids; each links to a few earlier nodes (fan-in through test.add)."""
    ids = [f"n{k}" for k in rng.sample(range(10 * n), n)]
    nodes = {}
    for i, node_id in enumerate(ids):
        earlier = rng.sample(ids[:i], min(i, rng.randint(0, 3)))
        nodes[node_id] = ({"kind": "test.add", "inputs": {"xs": earlier}} if earlier else
                          {"kind": "test.const", "params": {"value": float(i % 7)}})
    return {"nodes": nodes, "outputs": [ids[-1]]}


@pytest.mark.parametrize("seed", range(5))
def test_execution_order_is_the_smallest_first_topological_order_of_the_needed_nodes(seed):
    rng = random.Random(seed)
    doc = random_dag_doc(rng, 60)
    graph = V.validate(Workflow.from_dict(doc), H.REGISTRY.specs)
    for targets in ([doc["outputs"][0]], rng.sample(list(doc["nodes"]), 3), list(doc["nodes"])):
        needed = set().union(*(nx.ancestors(graph.dag, t) | {t} for t in targets))
        expected = list(nx.lexicographical_topological_sort(graph.dag.subgraph(needed)))
        assert V.execution_order(graph, targets) == expected


def test_a_valid_workflow_runs_without_networkx_and_a_cycle_is_still_located(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("networkx used on the valid path")

    doc = random_dag_doc(random.Random(7), 40)
    with monkeypatch.context() as m:
        m.setattr(V, "build_dag", refuse)
        m.setattr(V.nx, "ancestors", refuse)
        assert runtime(cache=False).run(doc).report.status == "ok"
    looped = {"nodes": {"a": {"kind": "test.scale", "inputs": {"x": "b"}},
                        "b": {"kind": "test.scale", "inputs": {"x": "a"}},
                        "c": {"kind": "test.const"}}, "outputs": ["c"]}
    with pytest.raises(WorkflowError, match="cycle detected: a -> b -> a"):
        runtime().run(looped)


def test_no_event_is_built_without_a_listener(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("event built with nobody listening")

    doc = {"nodes": {"c": {"kind": "test.const"}, "l": {"kind": "test.loop", "inputs": {"x": "c"},
                                                         "params": {"steps": 3, "sleep_s": 0}}},
           "outputs": ["l"]}
    for name in ("RunStarted", "NodeStarted", "NodeFinished", "StepProgress"):
        monkeypatch.setattr(X, name, refuse)
    result = runtime().run(doc)
    assert result["l"] == 4.0 and [n.cache for n in result.report.nodes] == ["miss", "miss"]


def test_a_context_is_made_only_for_nodes_that_take_one(monkeypatch):
    made = []
    real = X.make_context
    monkeypatch.setattr(X, "make_context", lambda rn, run, key=None: made.append(rn.id) or real(rn, run, key))
    doc = {"nodes": {"c": {"kind": "test.const"}, "s": {"kind": "test.scale", "inputs": {"x": "c"}},
                     "f": {"kind": "test.nfe", "params": {"calls": 3}}}, "outputs": ["s", "f"]}
    report = runtime().run(doc).report
    assert made == ["f"]
    assert {n.node: (n.nfe, n.metrics) for n in report.nodes} == {"c": (0, {}), "s": (0, {}),
                                                                   "f": (3, {"note": "hello"})}


def test_runs_without_caches_mark_exactly_the_nodes_that_would_have_keys():
    specs = Registry.default().specs
    for path in sorted((ROOT / "workflows").glob("*.json")):
        graph = V.validate(Workflow.load(path), specs)
        order = V.execution_order(graph)
        keys = X.compute_keys(graph, order, 0)
        marks = X.cacheable_marks(graph, order)
        assert {n: k is None for n, k in marks.items()} == {n: k is None for n, k in keys.items()}, path.name
    doc = {"nodes": {"c": {"kind": "test.const"}, "s": {"kind": "test.sink", "inputs": {"x": "c"}},
                     "t": {"kind": "test.scale", "inputs": {"x": "s"}}}, "outputs": ["t"]}
    assert {n.node: n.cache for n in runtime(cache=False).run(doc).report.nodes} == {
        "c": "miss", "s": "uncached", "t": "uncached"}


def python_work(fn) -> int:
    """Lines of Python executed and C functions called by fn(): a machine-independent measure of
    its work (a loop over the graph inside a per-node step shows up as lines per node)."""
    work = 0

    def line(frame, event, arg):
        nonlocal work
        work += event == "line"
        return line

    def c_call(frame, event, arg):
        nonlocal work
        work += event == "c_call"

    sys.settrace(line)
    sys.setprofile(c_call)
    try:
        fn()
    finally:
        sys.settrace(None)
        sys.setprofile(None)
    return work


def chain_doc(n: int) -> dict:
    nodes = {"n0": {"kind": "test.const"}}
    nodes.update({f"n{i}": {"kind": "test.scale", "inputs": {"x": f"n{i - 1}"}, "params": {"factor": 1.0}}
                  for i in range(1, n)})
    return {"nodes": nodes, "outputs": [f"n{n - 1}"]}


def fan_in_doc(n: int) -> dict:
    nodes = {f"c{i}": {"kind": "test.const", "params": {"value": float(i % 50)}} for i in range(n - 1)}
    nodes["total"] = {"kind": "test.add", "inputs": {"xs": list(nodes)}}
    return {"nodes": nodes, "outputs": ["total"]}


@pytest.mark.parametrize("shape", [chain_doc, fan_in_doc])
@pytest.mark.parametrize("cache", [False, True])
def test_the_work_of_a_run_is_linear_in_its_nodes(shape, cache):
    """Validation, ordering, keys, execution and the report: the work per node of a 2,000-node run
    is that of a 250-node run (within 2%), so nothing is repeated per node over the graph."""
    per_node = []
    for n in (250, 2000):
        wf = Workflow.from_dict(shape(n))
        rt = runtime(cache=cache)
        rt.run(wf)  # a cached run is measured on its memory hits
        per_node.append(python_work(lambda: rt.run(wf)) / n)
    assert per_node[1] == pytest.approx(per_node[0], rel=0.02)
