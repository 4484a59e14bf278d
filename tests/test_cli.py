"""The `samplegraph` command end to end: every workflow in workflows/ runs; validate,
nodes, schema and graph behave; user mistakes exit 2 (or 1 for a failing node) with
located messages and never a traceback."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
from helpers_workflows import ALL_WORKFLOWS, LIGHT_WORKFLOWS as WORKFLOWS  # heavy LM ones: test_lm_workflows.py


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "samplegraph.runtime.cli", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, timeout=600)


def run_wf(path: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("run", str(path), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
               "--device", "cpu", "--threads", "1", "--quiet", *extra)  # tiny batches: 1 thread is fastest


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_every_workflow_runs_through_the_cli(path, tmp_path):
    proc = run_wf(path, tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["status"] == "ok" and report["nodes"]
    assert "report:" in proc.stdout


def test_quickstart_writes_samples_plot_and_report_and_samples_match_the_density(tmp_path):
    proc = run_wf(ROOT / "workflows/quickstart.json", tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    samples = load_file(out / "samples.safetensors")["x"]
    assert samples.shape == (4096, 2)
    from PIL import Image
    with Image.open(out / "samples.png") as im:
        assert im.size[0] >= 256
    report = json.loads((out / "report.json").read_text())
    by_node = {n["node"]: n for n in report["nodes"]}
    assert by_node["sample"]["nfe"] == 2 * 18 - 1  # Heun: 2 per step, 1 on the last step to sigma 0
    # as close to the exact density as exact samples of the same size are (a wrong solver,
    # schedule or denoiser lands orders of magnitude above: 3 Heun steps give ~14)
    assert by_node["sliced_w2"]["metrics"]["sliced_wasserstein"] < 1.5 * exact_sample_baseline()
    assert "save: " in proc.stdout and "samples.safetensors" in proc.stdout


def exact_sample_baseline() -> float:
    """The largest sliced W2 of exact 4096-sample draws of the quickstart ring, over 3 seeds."""
    import torch

    from samplegraph.nodes.core.context import NodeContext
    from samplegraph.nodes.metrics.sliced_wasserstein import SlicedWasserstein
    from samplegraph.nodes.models.gmm import ModelGMM

    gmm, metric = ModelGMM(preset="ring").run(), SlicedWasserstein()
    draws = [gmm.sample(4096, torch.Generator().manual_seed(seed)).float() for seed in (10, 11, 12)]
    return max(metric.run(x, gmm, NodeContext.detached()) for x in draws)


def test_second_process_hits_the_disk_cache(tmp_path):
    assert run_wf(ROOT / "workflows/quickstart.json", tmp_path).returncode == 0
    assert run_wf(ROOT / "workflows/quickstart.json", tmp_path).returncode == 0
    caches = {n["node"]: n["cache"] for n in json.loads((tmp_path / "out/report.json").read_text())["nodes"]}
    assert caches["sample"] == "disk" and caches["model"] == "disk"
    assert caches["save"] == "uncached"


def test_set_overrides_a_parameter_and_unknown_targets_are_located(tmp_path):
    proc = run_wf(ROOT / "workflows/quickstart.json", tmp_path, "--set", "sigmas.steps=5", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out/report.json").read_text())
    assert next(n for n in report["nodes"] if n["node"] == "sample")["nfe"] == 9
    bad = run_wf(ROOT / "workflows/quickstart.json", tmp_path, "--set", "sigmaz.steps=5")
    assert bad.returncode == 2 and "sigmaz" in bad.stderr and "did you mean 'sigmas'" in bad.stderr


def test_validate_reports_every_problem_with_exit_2_and_no_traceback(tmp_path):
    wf = json.loads((ROOT / "workflows/quickstart.json").read_text())
    wf["nodes"]["sigmas"]["params"]["stepz"] = 3
    wf["nodes"]["solver"]["kind"] = "sampler.huen"
    wf["nodes"]["noise"]["params"]["batch"] = -1
    del wf["nodes"]["sample"]["inputs"]["latent"]
    wf["nodes"]["plot"]["inputs"]["density"] = "sigmas"
    wf["outputs"].append("nowhere")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(wf))
    proc = cli("validate", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for needle in ["node 'sigmas', param 'stepz'", "did you mean 'steps'", "node 'solver', kind",
                   "did you mean 'sampler.heun'", "node 'noise', param 'batch'", "node 'sample', input 'latent'",
                   "node 'plot', input 'density': type mismatch", "output 'nowhere' names no node"]:
        assert needle in proc.stderr, needle
    assert run_wf(path, tmp_path).returncode == 2


def test_malformed_json_names_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"nodes": {\n  "a": {"kind": "model.gmm",}\n}}')
    proc = cli("validate", str(path))
    assert proc.returncode == 2 and "line 2, column" in proc.stderr and "Traceback" not in proc.stderr


def test_failing_node_exits_1_naming_the_node_without_traceback(tmp_path):
    proc = run_wf(ROOT / "workflows/quickstart.json", tmp_path, "--set", "noise.shape=[3]", "--no-cache")
    assert proc.returncode == 1 and "node 'sample'" in proc.stderr and "Traceback" not in proc.stderr


def test_asking_for_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = run_wf(ROOT / "workflows/quickstart.json", tmp_path, "--device", "cuda")
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr


def test_nodes_lists_every_builtin_and_shows_one_in_full():
    from samplegraph.nodes import builtin_nodes
    proc = cli("nodes")
    assert proc.returncode == 0
    kinds = {cls.__node_kind__ for cls in builtin_nodes()}
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert kinds <= listed
    one = cli("nodes", "sampler.heun")
    assert one.returncode == 0 and "outputs:" in one.stdout and "Sampler" in one.stdout
    sample = cli("nodes", "sample", "--json")
    spec = json.loads(sample.stdout)
    assert [p["name"] for p in spec["inputs"]] == ["denoise", "sigmas", "sampler", "latent", "preview"]
    unknown = cli("nodes", "sampler.huen")
    assert unknown.returncode == 2 and "did you mean 'sampler.heun'" in unknown.stderr


def test_schema_is_valid_and_accepts_every_workflow_and_rejects_a_typo():
    proc = cli("schema")
    schema = json.loads(proc.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in ALL_WORKFLOWS:
        errors = list(validator.iter_errors(json.loads(path.read_text())))
        assert not errors, (path.name, [e.message for e in errors][:3])
    wf = json.loads((ROOT / "workflows/quickstart.json").read_text())
    wf["nodes"]["sigmas"]["params"]["stepz"] = 3
    assert not validator.is_valid(wf)


def test_graph_prints_mermaid_and_dot_with_every_edge():
    mermaid = cli("graph", str(ROOT / "workflows/quickstart.json")).stdout
    assert mermaid.startswith("flowchart LR") and "model -->|denoise| sample" in mermaid
    dot = cli("graph", str(ROOT / "workflows/quickstart.json"), "--format", "dot").stdout
    assert dot.startswith("digraph") and '"sample" -> "save" [label="x"];' in dot


def test_console_script_is_installed():
    exe = shutil.which("samplegraph")
    assert exe is not None
    assert subprocess.run([exe, "nodes"], capture_output=True, text=True).returncode == 0


@pytest.mark.gpu
def test_quickstart_runs_on_cuda_and_reports_the_device(tmp_path):
    proc = run_wf(ROOT / "workflows/quickstart.json", tmp_path, "--device", "cuda", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "out/report.json").read_text())
    sample = next(n for n in report["nodes"] if n["node"] == "sample")
    assert sample["device"].startswith("cuda") and sample["peak_cuda_bytes"] > 0


def test_a_structural_error_is_reported_together_with_the_other_nodes_problems(tmp_path):
    """'param' for 'params' in one node must not hide an unknown kind, a misspelled parameter
    or a bad output elsewhere; links to the broken node are not reported twice."""
    wf = json.loads((ROOT / "workflows/quickstart.json").read_text())
    wf["nodes"]["model"]["param"] = wf["nodes"]["model"].pop("params")
    wf["nodes"]["sigmas"]["kind"] = "schedule.karas"
    wf["nodes"]["solver"]["params"] = {"ordr": 2}
    wf["outputs"].append("nope")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(wf))
    for proc in (cli("validate", str(path)), run_wf(path, tmp_path)):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        for needle in ["node 'model': unknown field 'param' (did you mean 'params'?)",
                       "did you mean 'schedule.karras'", "node 'solver', param 'ordr'", "output 'nope' names no node"]:
            assert needle in proc.stderr, needle
        assert "4 problem(s)" in proc.stderr  # nothing about links to 'model' or 'sigmas'


@pytest.mark.parametrize("command", [["schema"], ["nodes"]])
def test_a_closed_pipe_exits_quietly(command):
    """The reader is gone before anything is written: no BrokenPipeError traceback."""
    import os
    r, w = os.pipe()
    os.close(r)
    proc = subprocess.run([sys.executable, "-m", "samplegraph.runtime.cli", *command], stdout=w,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=600)
    os.close(w)
    assert proc.returncode == 141 and proc.stderr == ""


def test_debug_after_the_subcommand_version_threads_and_quiet_help():
    assert cli("nodes", "--debug").returncode == 0
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == "samplegraph 0.1.0"
    for bad in ("0", "-2", "x"):
        proc = cli("run", "wf.json", "--threads", bad)
        assert proc.returncode == 2 and "--threads" in proc.stderr and "Traceback" not in proc.stderr
    assert "progress" in cli("run", "--help").stdout


def test_python_dash_m_samplegraph_is_the_same_command_line():
    proc = subprocess.run([sys.executable, "-m", "samplegraph", "--version"], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "samplegraph 0.1.0"
    assert subprocess.run([sys.executable, "-m", "samplegraph", "nodes", "--bogus"], capture_output=True,
                          text=True, cwd=ROOT, timeout=600).returncode == 2
