"""The run report as a file: numbers stay numbers, non-finite values stay strict JSON, source is kept."""
import json
import math

import helpers_nodes as H
from samplegraph import Runtime
from samplegraph.runtime.report import json_safe
from samplegraph.runtime.values import report_value


def strict(text: str) -> dict:
    """Parse JSON refusing NaN / Infinity (which strict JSON readers reject)."""
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_outputs_are_numbers_and_the_file_is_strict_json(tmp_path):
    rt = Runtime(device="cpu", nodes=H.ALL, cache=False)
    doc = {"nodes": {"a": {"kind": "test.const", "params": {"value": 2.5}},
                     "b": {"kind": "test.const", "params": {"value": -1.0}}}, "outputs": ["a", "b"]}
    report = strict((rt.run(doc, out_dir=tmp_path).report_path).read_text())
    assert report["outputs"] == {"a": 2.5, "b": -1.0}
    assert [n["outputs"] for n in report["nodes"]] == [{"out": 2.5}, {"out": -1.0}]


def test_non_finite_values_are_written_as_strings():
    assert [report_value(v) for v in (math.nan, math.inf, -math.inf, 3, True, "s")] == ["nan", "inf", "-inf", 3,
                                                                                     True, "s"]
    assert json_safe({"m": [1.0, math.nan, {"x": -math.inf}]}) == {"m": [1.0, "nan", {"x": "-inf"}]}


def test_report_names_the_workflow_file_it_ran(tmp_path):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"nodes": {"a": {"kind": "test.const"}}, "outputs": ["a"]}))
    report = Runtime(device="cpu", nodes=H.ALL, cache=False).run(path, out_dir=tmp_path).report
    assert report.source == str(path)


def test_small_result_objects_are_described_by_their_fields():
    """The console and the report show a calibration result's numbers, not only its class name (DC-Solver's
    ratios, a SolverPlan), within 200 characters; tensors by shape; other objects by class name."""
    import torch

    from samplegraph.nodes.samplers.dc_solver import CompensationRatios
    from samplegraph.runtime.values import describe

    ratios = CompensationRatios(tuple(1.0 + i / 100 for i in range(40)), (80.0, 1e-3, 0.0))
    text = describe(ratios)
    assert text.startswith("CompensationRatios(ratios=(1, 1.01, 1.02, 1.03, 1.04, 1.05, ...), sigmas=(80, 0.001, 0))")
    assert len(describe(CompensationRatios(tuple(range(10)), tuple(float(i) for i in range(10 ** 3))))) < 200
    assert describe(torch.zeros(2, 3)) == "Tensor(2, 3) float32 cpu" and describe(0.1 + 0.2) == "0.30000000000000004"
    assert describe(object()) == "object" and describe(["a", "b"]) == "('a', 'b')"
