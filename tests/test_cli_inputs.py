"""Hostile input files and arguments: every one gives exit 0 or 2 with located problems, never a
traceback (driven through the CLI's entry function in-process)."""
import contextlib
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from samplegraph.runtime.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = json.loads((ROOT / "workflows" / "quickstart.json").read_text())


def cli(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse usage errors
            code = e.code
    return code, out.getvalue() + err.getvalue()


def write(tmp_path: Path, data: bytes) -> str:
    path = tmp_path / "wf.json"
    path.write_bytes(data)
    return str(path)


CASES = {
    "invalid utf-8": (b'{"version":1,"nodes":{"a\xe2\x82":{}}}', "invalid UTF-8 at line 1, column 25 (byte 24)"),
    "utf-16": ('{"version": 1}'.encode("utf-16"), "UTF-16"),
    "huge integer": (b'{"version":1,"seed":' + b"9" * 5000 + b"}", "an integer of 5000 digits at line 1, column 21"),
    "lone surrogate": (b'{"nodes":{"a":{"kind":"sampler.heun\\ud800"}},"outputs":["a"]}', "lone surrogate"),
    "deep nesting": (b'{"nodes":' + b"[" * 5000 + b"]" * 5000 + b"}", "nested deeper than 64 levels at line 1"),
    "duplicate node id": (b'{"nodes":{"a":{"kind":"model.gmm"},"a":{"kind":"model.gmm"}},"outputs":["a"]}',
                          "key 'a' appears more than once in 'nodes'"),
    "seed 2**64": (json.dumps({**QUICK, "seed": 2**64}).encode(), "seed"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["validate", "graph"])
def test_hostile_files_are_located_problems(tmp_path, command, case):
    data, expected = CASES[case]
    code, text = cli(command, write(tmp_path, data))
    assert code == 2 and expected in text and "Traceback" not in text


def test_a_utf8_bom_is_accepted(tmp_path):
    code, text = cli("validate", write(tmp_path, b"\xef\xbb\xbf" + json.dumps(QUICK).encode()))
    assert code == 0, text


def test_overrides_and_arguments_out_of_range_are_usage_or_validation_errors(tmp_path):
    path = str(ROOT / "workflows" / "quickstart.json")
    code, text = cli("validate", path, "--set", "sigmas.steps=9223372036854775808")
    assert code == 2 and "param 'steps'" in text and "9223372036854775807" in text
    code, text = cli("validate", path, "--set", "sigmas.steps=" + "9" * 5000)
    assert code == 2 and "5000 digits" in text
    code, text = cli("run", path, "--seed", str(2**64), "--no-cache", "--out", str(tmp_path), "--quiet")
    assert code == 2 and "seed" in text and "Traceback" not in text
    code, text = cli("run", path, "--device", "gpu", "--no-cache")
    assert code == 2 and "argument --device" in text and "problem(s) in workflow" not in text
    code, text = cli("validate", write(tmp_path, json.dumps({**QUICK, "nodes": {**QUICK["nodes"], "sigmas": {
        "kind": "schedule.karras", "params": {"steps": "18"}}}}).encode()))
    assert code == 2 and "param 'steps'" in text  # strict: a string is not an integer (JSON Schema agrees)


def test_graph_validates_and_nodes_lists_a_role(tmp_path):
    doc = {**QUICK, "nodes": {**QUICK["nodes"], "solver": {"kind": "sampler.nope"}}}
    code, text = cli("graph", write(tmp_path, json.dumps(doc).encode()))
    assert code == 2 and "unknown node kind 'sampler.nope'" in text and "flowchart" not in text
    code, text = cli("nodes", "sampler")
    kinds = [line.split()[0] for line in text.splitlines()]
    assert code == 0 and "sampler.heun" in kinds and all(k.startswith("sampler.") for k in kinds)


def test_a_tensor_output_is_saved_and_its_path_printed(tmp_path):
    code, text = cli("run", str(ROOT / "workflows" / "quickstart.json"), "--output", "sample", "--no-cache",
                     "--out", str(tmp_path), "--quiet", "--set", "noise.batch=8", "--threads", "1")
    assert code == 0 and (tmp_path / "sample.safetensors").exists() and "sample.safetensors" in text


json_text = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                     max_size=3), max_leaves=12)
mutations = st.sampled_from([
    lambda b: b, lambda b: b"\xef\xbb\xbf" + b, lambda b: b[: len(b) // 2], lambda b: b.replace(b'"', b"\xff", 1),
    lambda b: b.replace(b"18", b"1" + b"8" * 60), lambda b: b.replace(b'"sigmas":', b'"sigmas": 1, "sigmas":'),
    lambda b: b.replace(b"sampler.heun", b"sampler.heun\\udc80"), lambda b: b"[" * 70 + b + b"]" * 70,
    lambda b: b.replace(b'"seed": 0', b'"seed": 18446744073709551616')])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutate=mutations, extra=json_text)
def test_fuzzed_files_never_escape_as_tracebacks(tmp_path, mutate, extra):
    doc = dict(QUICK, extra=extra)  # an unknown top-level field as well: still a located problem
    data = mutate(json.dumps(doc, indent=1).encode())
    for command in ("validate", "graph"):
        code, text = cli(command, write(tmp_path, data))
        assert code in (0, 2) and "Traceback" not in text
