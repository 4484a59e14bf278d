"""Validation reports every problem of a workflow at once, each located (node id, port or
parameter) with what was expected and what was found; nothing runs when a workflow is bad."""
from __future__ import annotations

import re

import pytest

import helpers_nodes as H
from samplegraph import Node, Registry, Runtime, Workflow, WorkflowError, node
from samplegraph.graph.errors import Problem
from samplegraph.graph.validate import validate

SPECS = H.REGISTRY.specs


def base() -> dict:
    """A valid workflow touching float, list-of-float, Tensor and multi-output ports."""
    return {
        "version": 1, "seed": 0,
        "nodes": {
            "a": {"kind": "test.const", "params": {"value": 1.5}},
            "b": {"kind": "test.const", "params": {"value": 2.0}},
            "sum": {"kind": "test.add", "inputs": {"xs": ["a", "b"]}},
            "scaled": {"kind": "test.scale", "inputs": {"x": "sum"}},
            "t": {"kind": "test.tensor", "params": {"n": 3}},
            "mm": {"kind": "test.minmax", "inputs": {"x": "t"}},
            "hi": {"kind": "test.scale", "inputs": {"x": "mm.hi"}},
        },
        "outputs": ["scaled", "hi"],
    }


def problems_of(doc: dict | str) -> list[Problem]:
    """Parse + validate like the CLI does; the list of problems (fails if the workflow is valid)."""
    with pytest.raises(WorkflowError) as info:
        wf = Workflow.from_json(doc) if isinstance(doc, str) else Workflow.from_dict(doc)
        validate(wf, SPECS)
    assert info.value.problems, "a WorkflowError must carry at least one problem"
    return info.value.problems


def only(problems: list[Problem], node: str | None, where: str | None) -> Problem:
    found = [p for p in problems if p.node == node and p.where == where]
    assert len(found) == 1, f"expected one problem at node={node!r} where={where!r}, got {problems}"
    return found[0]


def test_base_workflow_is_valid_and_runs():
    wf = Workflow.from_dict(base())
    graph = validate(wf, SPECS)
    assert set(graph.nodes) == set(base()["nodes"])
    result = Runtime(device="cpu", registry=H.REGISTRY).run(wf)
    assert result["scaled"] == 7.0 and result["hi"] == 4.0


def test_malformed_json_reports_line_and_column():
    text = '{\n  "nodes": {\n    "a": {"kind": "test.const",, "params": {}}\n  }\n}'
    (p,) = problems_of(text)
    assert "malformed JSON" in p.message
    assert "line 3" in p.message and "column 32" in p.message


def test_malformed_workflow_file_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"nodes": {]}')
    with pytest.raises(WorkflowError) as info:
        Workflow.load(path)
    assert str(path) in str(info.value) and "line 1" in str(info.value)


def test_deeply_nested_json_is_a_workflow_error_not_a_recursion_error():
    for text in ["[" * 100_000, '{"a": ' * 100_000]:
        problems = problems_of(text)
        assert "JSON" in problems[0].message


def test_top_level_must_be_an_object():
    (p,) = problems_of("[1, 2]")
    assert "JSON object" in p.message and "list" in p.message


def test_unknown_kind_is_located_and_suggests_the_closest():
    doc = base()
    doc["nodes"]["b"]["kind"] = "test.cosnt"
    p = only(problems_of(doc), "b", "kind")
    assert "unknown node kind 'test.cosnt'" in p.message
    assert p.hint == "did you mean 'test.const'?"


def test_misspelled_parameter_is_located_and_suggests_the_field():
    doc = base()
    doc["nodes"]["a"]["params"] = {"valeu": 3.0}
    p = only(problems_of(doc), "a", "param 'valeu'")
    assert "unknown parameter 'valeu'" in p.message and p.hint == "did you mean 'value'?"


def test_unknown_parameter_without_close_match_lists_the_fields():
    doc = base()
    doc["nodes"]["t"]["params"] = {"zzzzzz": 1}
    p = only(problems_of(doc), "t", "param 'zzzzzz'")
    assert all(name in p.hint for name in ("n", "width", "value"))


def test_parameter_of_wrong_type_names_expected_and_found():
    doc = base()
    doc["nodes"]["t"]["params"] = {"n": "three"}
    p = only(problems_of(doc), "t", "param 'n'")
    assert "integer" in p.message and "'three'" in p.message


def test_parameter_out_of_range_names_bound_and_value():
    doc = base()
    doc["nodes"]["t"]["params"] = {"n": 0}
    p = only(problems_of(doc), "t", "param 'n'")
    assert "greater than or equal to 1" in p.message and "got 0" in p.message


def test_missing_required_input_names_port_and_expected_type():
    doc = base()
    del doc["nodes"]["scaled"]["inputs"]["x"]
    p = only(problems_of(doc), "scaled", "input 'x'")
    assert "missing required input" in p.message and "float" in p.message


def test_optional_input_may_be_left_unlinked():
    doc = base()
    doc["nodes"]["s"] = {"kind": "test.sleep", "params": {"seconds": 0}}
    validate(Workflow.from_dict(doc), SPECS)


def test_link_to_missing_node_is_located_and_suggests():
    doc = base()
    doc["nodes"]["scaled"]["inputs"]["x"] = "summ"
    p = only(problems_of(doc), "scaled", "input 'x'")
    assert "no node 'summ'" in p.message and p.hint == "did you mean 'sum'?"


def test_link_to_missing_output_port_lists_the_real_ports():
    doc = base()
    doc["nodes"]["hi"]["inputs"]["x"] = "mm.high"
    p = only(problems_of(doc), "hi", "input 'x'")
    assert "no output 'high'" in p.message and "hi" in p.hint


def test_bare_link_to_multi_output_node_names_its_ports():
    doc = base()
    doc["nodes"]["hi"]["inputs"]["x"] = "mm"
    p = only(problems_of(doc), "hi", "input 'x'")
    assert "'mm.lo'" in p.message and "'mm.hi'" in p.message


def test_unknown_input_port_is_located():
    doc = base()
    doc["nodes"]["scaled"]["inputs"]["y"] = "a"
    p = only(problems_of(doc), "scaled", "input 'y'")
    assert "unknown input port 'y'" in p.message


def test_list_of_links_on_single_port_is_an_error():
    doc = base()
    doc["nodes"]["scaled"]["inputs"]["x"] = ["a", "b"]
    p = only(problems_of(doc), "scaled", "input 'x'")
    assert "one link" in p.message


def test_port_type_mismatch_names_both_types():
    doc = base()
    doc["nodes"]["mm"]["inputs"]["x"] = "a"  # float into a Tensor port
    p = only(problems_of(doc), "mm", "input 'x'")
    assert "expected Tensor" in p.message and "produces float" in p.message


class Base:
    pass


class Derived(Base):
    pass


@node("test.make_derived")
class MakeDerived(Node):
    """Produces a Derived."""

    def run(self) -> Derived:
        return Derived()


@node("test.make_base")
class MakeBase(Node):
    """Produces a Base."""

    def run(self) -> Base:
        return Base()


@node("test.take_base")
class TakeBase(Node):
    """Accepts a Base (or a subclass)."""

    def run(self, x: Base) -> float:
        return 1.0


@node("test.take_derived")
class TakeDerived(Node):
    """Accepts only a Derived."""

    def run(self, x: Derived) -> float:
        return 1.0


def test_subclass_output_connects_to_base_class_port():
    specs = Registry([MakeDerived, TakeBase, TakeDerived, MakeBase]).specs
    ok = Workflow.from_dict({"nodes": {"d": {"kind": "test.make_derived"},
                                       "t": {"kind": "test.take_base", "inputs": {"x": "d"}}},
                             "outputs": ["t"]})
    validate(ok, specs)
    bad = Workflow.from_dict({"nodes": {"b": {"kind": "test.make_base"},
                                        "t": {"kind": "test.take_derived", "inputs": {"x": "b"}}},
                              "outputs": ["t"]})
    with pytest.raises(WorkflowError) as info:
        validate(bad, specs)
    assert "expected Derived, but 'b' produces Base" in str(info.value)


def cycle_path(message: str) -> list[str]:
    m = re.search(r"cycle detected: (.+)$", message)
    assert m, message
    return m.group(1).split(" -> ")


def test_cycle_is_reported_with_its_path():
    doc = base()
    doc["nodes"]["a"] = {"kind": "test.scale", "inputs": {"x": "scaled"}}
    (p,) = [p for p in problems_of(doc) if "cycle" in p.message]
    path = cycle_path(p.message)
    assert path[0] == path[-1]
    assert set(path) == {"a", "sum", "scaled"}
    edges = {("scaled", "a"), ("a", "sum"), ("sum", "scaled")}
    assert all((u, v) in edges for u, v in zip(path, path[1:]))


def test_self_loop_is_a_cycle():
    doc = base()
    doc["nodes"]["scaled"]["inputs"]["x"] = "scaled"
    (p,) = [p for p in problems_of(doc) if "cycle" in p.message]
    assert cycle_path(p.message) == ["scaled", "scaled"] and p.node == "scaled"


def test_two_separate_cycles_are_both_reported():
    doc = base()
    doc["nodes"]["scaled"]["inputs"]["x"] = "scaled"
    doc["nodes"]["hi2"] = {"kind": "test.scale", "inputs": {"x": "hi3"}}
    doc["nodes"]["hi3"] = {"kind": "test.scale", "inputs": {"x": "hi2"}}
    cycles = [p for p in problems_of(doc) if "cycle" in p.message]
    assert {frozenset(cycle_path(p.message)) for p in cycles} == {frozenset({"scaled"}), frozenset({"hi2", "hi3"})}


def test_output_naming_no_node_is_reported():
    doc = base()
    doc["outputs"].append("scaledd")
    p = only(problems_of(doc), None, "outputs")
    assert "output 'scaledd' names no node" in p.message and p.hint == "did you mean 'scaled'?"


def test_output_naming_missing_port_is_reported():
    doc = base()
    doc["outputs"].append("mm.middle")
    p = only(problems_of(doc), None, "output 'mm.middle'")
    assert "no output 'middle'" in p.message


def test_empty_outputs_is_reported():
    doc = base()
    doc["outputs"] = []
    assert any("'outputs' is empty" in p.message for p in problems_of(doc))


def test_invalid_node_id_is_reported():
    doc = base()
    doc["nodes"]["bad.id"] = {"kind": "test.const"}
    p = only(problems_of(doc), "bad.id", None)
    assert "invalid node id" in p.message


def test_unknown_document_field_is_located_with_hint():
    doc = base()
    doc["nodes"]["a"]["param"] = {"value": 1}
    problems = problems_of(doc)
    (p,) = [p for p in problems if p.node == "a"]
    assert "unknown field 'param'" in p.message and p.hint == "did you mean 'params'?"


def test_missing_kind_is_located():
    doc = base()
    del doc["nodes"]["a"]["kind"]
    (p,) = problems_of(doc)
    assert p.node == "a" and p.where == "field 'kind'" and "required" in p.message


def test_every_problem_is_reported_at_once():
    doc = base()
    n = doc["nodes"]
    n["b"]["kind"] = "test.cosnt"                          # unknown kind
    n["a"]["params"] = {"valeu": 1.0}                       # misspelled parameter
    n["t"]["params"] = {"n": "three", "width": 0}           # wrong type + out of range
    del n["scaled"]["inputs"]["x"]                          # missing required input
    n["sum"]["inputs"]["xs"] = ["a", "ghost"]               # link to a missing node
    n["hi"]["inputs"]["x"] = "mm.high"                      # link to a missing port
    n["mm2"] = {"kind": "test.minmax", "inputs": {"x": "a"}}  # port type mismatch
    n["c1"] = {"kind": "test.scale", "inputs": {"x": "c2"}}
    n["c2"] = {"kind": "test.scale", "inputs": {"x": "c1"}}  # a cycle
    doc["outputs"].append("nowhere")                        # output naming no node
    with pytest.raises(WorkflowError) as info:
        validate(Workflow.from_dict(doc), SPECS)
    problems = info.value.problems
    located = {(p.node, p.where) for p in problems}
    assert {("b", "kind"), ("a", "param 'valeu'"), ("t", "param 'n'"), ("t", "param 'width'"),
            ("scaled", "input 'x'"), ("sum", "input 'xs'"), ("hi", "input 'x'"), ("mm2", "input 'x'"),
            (None, "outputs")} <= located
    assert any("cycle detected" in p.message and p.node in ("c1", "c2") for p in problems)
    text = str(info.value)
    assert text.startswith(f"{len(problems)} problem(s)")
    assert all(str(p) in text for p in problems)


def test_bad_workflow_runs_nothing():
    H.reset()
    doc = base()
    doc["nodes"]["a"]["params"] = {"value": 1.0, "tag": "probe"}
    doc["nodes"]["scaled"]["params"] = {"factor": "x"}
    with pytest.raises(WorkflowError):
        Runtime(device="cpu", registry=H.REGISTRY).run(doc)
    assert H.ran("probe") == 0


def test_problem_renders_node_place_message_and_hint():
    p = Problem("unknown parameter 'valeu'", "a", "param 'valeu'", "did you mean 'value'?")
    assert str(p) == "node 'a', param 'valeu': unknown parameter 'valeu' (did you mean 'value'?)"


def test_int_params_are_strict_json_integers_bounded_to_int64():
    """"18" or true for an int is refused as JSON Schema says; 18.0 is an integer; int64 bounds."""
    from samplegraph.nodes.schedules.karras import Karras

    from pydantic import ValidationError
    for bad in ("18", True, 18.5, 2**63, -(2**63) - 1):
        with pytest.raises(ValidationError):
            Karras.model_validate({"steps": bad})
    assert Karras.model_validate({"steps": 18.0}).steps == 18
    assert Karras.model_json_schema()["properties"]["steps"]["maximum"] == 2**63 - 1
