"""Property-based validation: randomly broken workflows never crash the validator; they give
a WorkflowError whose problems include every independent breakage, each located.

A valid base workflow is broken by 1..4 mutations, each of which necessarily breaks it
(and an oracle re-derives, from the final document alone, the (node, place) pairs that
must be reported); then optionally the whole document is replaced by random JSON or its
text is corrupted. Fully random JSON documents and texts are fed in as well."""
from __future__ import annotations

import copy
import json
import re

import networkx as nx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import helpers_nodes as H
from samplegraph import Workflow, WorkflowError
from samplegraph.graph.errors import Problem
from samplegraph.graph.validate import ValidGraph, validate

SPECS = H.REGISTRY.specs
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BASE = {
    "version": 1, "seed": 0,
    "nodes": {
        "a": {"kind": "test.const", "params": {"value": 1.5}},
        "b": {"kind": "test.const", "params": {"value": 2.0}},
        "sum": {"kind": "test.add", "inputs": {"xs": ["a", "b"]}, "params": {"bias": 1.0}},
        "scaled": {"kind": "test.scale", "inputs": {"x": "sum"}},
        "t": {"kind": "test.tensor", "params": {"n": 3, "width": 2}},
        "ts": {"kind": "test.tensor_scale", "inputs": {"x": "t"}},
        "mm": {"kind": "test.minmax", "inputs": {"x": "ts"}},
        "hi": {"kind": "test.scale", "inputs": {"x": "mm.hi"}},
    },
    "outputs": ["scaled", "hi"],
}

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
names = st.text(min_size=1, max_size=10)

# (kind, field) -> values outside the field's declared bounds
OUT_OF_RANGE = {
    ("test.const", "value"): st.floats(min_value=100, exclude_min=True, allow_nan=False, allow_infinity=False)
    | st.floats(max_value=-100, exclude_max=True, allow_nan=False, allow_infinity=False),
    ("test.add", "bias"): st.floats(max_value=-10, exclude_max=True, allow_nan=False, allow_infinity=False),
    ("test.tensor", "n"): st.integers(max_value=0) | st.integers(min_value=4097),
    ("test.tensor", "width"): st.integers(max_value=0) | st.integers(min_value=257),
}
NOT_A_NUMBER = (st.none() | st.lists(json_scalars, max_size=3) | st.dictionaries(st.text(max_size=3), json_scalars,
                max_size=2) | st.text(alphabet="abcdghjklmopqrsuvwxyz", min_size=1, max_size=6))


# ---------------------------------------------------------------- the oracle


def field_invalid(kind: str, name: str, value: object) -> bool:
    try:
        SPECS[kind].params.model_validate({name: value})
        return False
    except ValidationError:
        return True


def expected_problems(doc: dict) -> tuple[set[tuple[str | None, str | None]], bool]:
    """(node, place-prefix) pairs that validation must report for `doc`, and whether it has a cycle.

    Derived from the document and the specs alone, independently of the validator's code."""
    want: set[tuple[str | None, str | None]] = set()
    nodes = doc["nodes"]
    for node_id, decl in nodes.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", node_id):
            want.add((node_id, None))
        spec = SPECS.get(decl["kind"])
        if spec is None:
            want.add((node_id, "kind"))
            continue
        for name, value in decl.get("params", {}).items():
            if name not in spec.params.model_fields or field_invalid(spec.kind, name, value):
                want.add((node_id, f"param '{name}"))
        inputs = decl.get("inputs", {})
        for port_name, value in inputs.items():
            port = spec.input(port_name)
            if port is None or (isinstance(value, list) and not port.many):
                want.add((node_id, f"input '{port_name}'"))
                continue
            for link in value if isinstance(value, list) else [value]:
                src, dot, out = link.partition(".")
                src_spec = SPECS.get(nodes[src]["kind"]) if src in nodes else None
                if src not in nodes:
                    want.add((node_id, f"input '{port_name}'"))
                elif src_spec is not None:
                    produced = ([p for p in src_spec.outputs if p.name == out] if dot
                                else list(src_spec.outputs) if len(src_spec.outputs) == 1 else [])
                    if not produced or not issubclass(produced[0].type, port.type):
                        want.add((node_id, f"input '{port_name}'"))
        for port in spec.inputs:
            if port.required and port.name not in inputs:
                want.add((node_id, f"input '{port.name}'"))
    for name in doc["outputs"]:
        if name.partition(".")[0] not in nodes:
            want.add((None, "outputs"))
    return want, not nx.is_directed_acyclic_graph(link_graph(doc))


def link_graph(doc: dict) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(doc["nodes"])
    for node_id, decl in doc["nodes"].items():
        for value in decl.get("inputs", {}).values():
            for link in value if isinstance(value, list) else [value]:
                if link.partition(".")[0] in doc["nodes"]:
                    g.add_edge(link.partition(".")[0], node_id)
    return g


def reported(problems: list[Problem], node: str | None, place: str | None) -> bool:
    return any(p.node == node and (p.where == place if place in (None, "kind", "outputs")
                                   else (p.where or "").startswith(place)) for p in problems)


def run_validation(doc: object) -> ValidGraph | WorkflowError:
    """Parse and validate like the CLI; any exception other than WorkflowError fails the test."""
    try:
        wf = Workflow.from_json(doc) if isinstance(doc, str) else Workflow.from_dict(doc)
        return validate(wf, SPECS)
    except WorkflowError as e:
        assert e.problems and all(str(p) for p in e.problems)
        assert str(e).count("\n  - ") == len(e.problems)
        return e


def assert_oracle_agrees(doc: dict, outcome: ValidGraph | WorkflowError) -> None:
    want, cyclic = expected_problems(doc)
    if isinstance(outcome, ValidGraph):
        assert not want and not cyclic, f"validation passed, but the oracle expects {want} (cycle: {cyclic})"
        return
    missing = {w for w in want if not reported(outcome.problems, *w)}
    assert not missing, f"not reported: {missing}\nreported: {outcome.problems}"
    if cyclic:
        assert any(p.message.startswith("cycle detected: ") for p in outcome.problems)


# ---------------------------------------------------------------- mutations


def known(doc: dict, node_id: str) -> bool:
    return doc["nodes"][node_id]["kind"] in SPECS


def m_delete_required_input(data, doc) -> bool:
    choices = [(n, p) for n, d in doc["nodes"].items() for p in d.get("inputs", {})
               if known(doc, n) and SPECS[d["kind"]].input(p) is not None and SPECS[d["kind"]].input(p).required]
    if not choices:
        return False
    node_id, port = data.draw(st.sampled_from(sorted(choices)))
    del doc["nodes"][node_id]["inputs"][port]
    return True


def m_rename_kind(data, doc) -> bool:
    node_id = data.draw(st.sampled_from(sorted(doc["nodes"])))
    doc["nodes"][node_id]["kind"] = data.draw(names.filter(lambda k: k not in SPECS))
    return True


def m_unknown_param(data, doc) -> bool:
    node_id = data.draw(st.sampled_from(sorted(doc["nodes"])))
    kind = doc["nodes"][node_id]["kind"]
    fields = SPECS[kind].params.model_fields if kind in SPECS else {}
    name = data.draw(names.filter(lambda n: n not in fields))
    doc["nodes"][node_id].setdefault("params", {})[name] = data.draw(json_values)
    return True


def m_wrong_type_param(data, doc) -> bool:
    choices = [(n, f) for n, d in doc["nodes"].items() if known(doc, n)
               for f, info in SPECS[d["kind"]].params.model_fields.items() if info.annotation in (int, float)]
    if not choices:
        return False
    node_id, name = data.draw(st.sampled_from(sorted(choices)))
    kind = doc["nodes"][node_id]["kind"]
    doc["nodes"][node_id].setdefault("params", {})[name] = data.draw(
        NOT_A_NUMBER.filter(lambda v: field_invalid(kind, name, v)))
    return True


def m_out_of_range_param(data, doc) -> bool:
    choices = [(n, f) for n, d in doc["nodes"].items() for (k, f) in OUT_OF_RANGE if d["kind"] == k]
    if not choices:
        return False
    node_id, name = data.draw(st.sampled_from(sorted(choices)))
    doc["nodes"][node_id].setdefault("params", {})[name] = data.draw(OUT_OF_RANGE[(doc["nodes"][node_id]["kind"], name)])
    return True


def input_ports(doc: dict) -> list[tuple[str, str]]:
    return sorted((n, p.name) for n, d in doc["nodes"].items() if known(doc, n) for p in SPECS[d["kind"]].inputs)


def m_link_missing_node(data, doc) -> bool:
    node_id, port = data.draw(st.sampled_from(input_ports(doc)))
    target = data.draw(names.filter(lambda t: t.partition(".")[0] not in doc["nodes"]))
    doc["nodes"][node_id].setdefault("inputs", {})[port] = target
    return True


def m_link_missing_port(data, doc) -> bool:
    sources = sorted(n for n in doc["nodes"] if known(doc, n))
    if not sources:
        return False
    node_id, port = data.draw(st.sampled_from(input_ports(doc)))
    src = data.draw(st.sampled_from(sources))
    outs = {p.name for p in SPECS[doc["nodes"][src]["kind"]].outputs}
    out = data.draw(st.text(max_size=6).filter(lambda o: o not in outs))
    doc["nodes"][node_id].setdefault("inputs", {})[port] = f"{src}.{out}"
    return True


def m_cycle(data, doc) -> bool:
    """Link some node u to a node v reachable from u (or to itself): a cycle, whatever else changes."""
    g = link_graph(doc)
    u = data.draw(st.sampled_from(sorted(doc["nodes"])))
    v = data.draw(st.sampled_from(sorted(nx.descendants(g, u) | {u})))
    inputs = doc["nodes"][u].setdefault("inputs", {})
    port = data.draw(st.sampled_from(sorted(inputs) or ["loop"]))
    inputs[port] = v
    return True


def m_output_naming_no_node(data, doc) -> bool:
    doc["outputs"].append(data.draw(names.filter(lambda t: t.partition(".")[0] not in doc["nodes"])))
    return True


MUTATIONS = [m_delete_required_input, m_rename_kind, m_unknown_param, m_wrong_type_param, m_out_of_range_param,
             m_link_missing_node, m_link_missing_port, m_cycle, m_output_naming_no_node]


def corrupt_text(data, text: str) -> str:
    """A corruption that cannot leave a valid workflow: a truncated object or a raw control
    character is never valid JSON, and a stray comma either breaks the JSON or lands inside a
    string, every one of which (ids, kinds, fields, links, outputs) is load-bearing in BASE."""
    how = data.draw(st.sampled_from(["truncate", "comma", "control"]))
    if how == "truncate":
        return text[:data.draw(st.integers(0, len(text.rstrip()) - 1))]
    i = data.draw(st.integers(0, len(text) - (how == "control")))
    if how == "comma":
        return text[:i] + "," + text[i:]
    return text[:i] + data.draw(st.sampled_from(["\x00", "\x01", "\x1f"])) + text[i + 1:]


# ---------------------------------------------------------------- properties


def test_base_workflow_is_valid():
    assert isinstance(run_validation(copy.deepcopy(BASE)), ValidGraph)
    assert expected_problems(BASE) == (set(), False)


@FUZZ
@given(st.data())
def test_mutated_workflow_reports_every_breakage_located(data):
    doc = copy.deepcopy(BASE)
    applied = 0
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        mutation = data.draw(st.sampled_from(MUTATIONS))
        applied += mutation(data, doc)
    if not applied:
        m_rename_kind(data, doc)
    outcome = run_validation(doc)
    assert isinstance(outcome, WorkflowError), "a necessarily-breaking mutation left the workflow valid"
    assert all(p.node is not None or p.where is not None for p in outcome.problems)
    assert_oracle_agrees(doc, outcome)


@FUZZ
@given(st.data())
def test_corrupted_json_text_is_reported_with_line_and_column(data):
    doc = copy.deepcopy(BASE)
    if data.draw(st.booleans()):
        data.draw(st.sampled_from(MUTATIONS))(data, doc)
    text = corrupt_text(data, json.dumps(doc, indent=2))
    outcome = run_validation(text)
    assert isinstance(outcome, WorkflowError)
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        (p,) = outcome.problems
        assert p.message.startswith(f"malformed JSON at line {e.lineno}, column {e.colno}: ")


@FUZZ
@given(json_values)
def test_random_json_document_never_crashes(doc):
    outcome = run_validation(doc)
    assert isinstance(outcome, WorkflowError)


@FUZZ
@given(st.text(max_size=60) | json_values.map(json.dumps))
def test_random_text_never_crashes(text):
    outcome = run_validation(text)
    assert isinstance(outcome, WorkflowError)


@FUZZ
@given(st.dictionaries(st.sampled_from(["version", "seed", "nodes", "outputs", "extra"]), json_values, max_size=5))
def test_random_top_level_fields_never_crash(doc):
    run_validation(doc)


ids = st.sampled_from(["a", "b", "c", "d", "a.b", "1x"])
ports = st.sampled_from(["x", "xs", "obj", "y"])
link = st.builds(lambda n, p: n + p, ids, st.sampled_from(["", ".out", ".lo", ".hi", ".zz"]))
node_decl = st.fixed_dictionaries(
    {"kind": st.sampled_from(sorted(SPECS)) | names},
    optional={"params": st.dictionaries(st.sampled_from(["value", "n", "factor", "bias", "tag", "steps", "q"]),
                                        json_values, max_size=3),
              "inputs": st.dictionaries(ports, link | st.lists(link, max_size=3), max_size=2)})
random_workflow = st.fixed_dictionaries({"nodes": st.dictionaries(ids, node_decl, max_size=5),
                                         "outputs": st.lists(link, min_size=1, max_size=3)},
                                        optional={"seed": st.integers(0, 2**63 - 1), "version": st.just(1)})


@FUZZ
@given(random_workflow)
def test_random_well_formed_workflow_agrees_with_oracle(doc):
    assert_oracle_agrees(doc, run_validation(doc))
