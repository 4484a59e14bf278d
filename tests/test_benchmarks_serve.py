"""benchmarks/serve.py and benchmarks/comfyui_server.py: the script runs without ComfyUI (its row says "not
installed" and how to add it), the install is found only where COMFYUI_DIR / COMFYUI_PYTHON name a checkout and an
interpreter, every ComfyUI job differs (its cache skips none), the model-free PNG job makes a flat image with its
workflow embedded, and the summary's numbers are the exact percentiles of the per-job times."""
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from samplegraph import Runtime

from helpers_benchmarks import benchmark_modules


@pytest.fixture(scope="module")
def modules():
    with benchmark_modules("serve", "comfyui_server") as found:
        yield found


@pytest.fixture(scope="module")
def bench(modules):
    return modules[0]


@pytest.fixture(scope="module")
def comfy(modules):
    return modules[1]


def test_the_comfyui_install_comes_only_from_a_checkout_and_an_interpreter(comfy, tmp_path):
    missing = comfy.ComfyUIInstall.from_env({})
    assert missing.startswith("not installed") and "COMFYUI_DIR" in missing and "COMFYUI_PYTHON" in missing
    no_main = comfy.ComfyUIInstall.from_env({"COMFYUI_DIR": str(tmp_path), "COMFYUI_PYTHON": sys.executable})
    assert isinstance(no_main, str) and "no main.py" in no_main
    (tmp_path / "main.py").write_text("")
    no_python = comfy.ComfyUIInstall.from_env({"COMFYUI_DIR": str(tmp_path), "COMFYUI_PYTHON": "/nonexistent/python"})
    assert isinstance(no_python, str) and "/nonexistent/python" in no_python
    (tmp_path / "comfyui_version.py").write_text('# generated\n__version__ = "0.8.0"\n')
    found = comfy.ComfyUIInstall.from_env({"COMFYUI_DIR": str(tmp_path), "COMFYUI_PYTHON": sys.executable,
                                           "COMFYUI_PYTHONPATH": "/shims"})
    assert found == comfy.ComfyUIInstall(tmp_path, Path(sys.executable), "/shims") and found.version() == "0.8.0"


def test_every_comfyui_job_is_a_distinct_model_free_graph(comfy):
    prompts = [comfy.png_prompt(i) for i in range(100)]
    assert len({p["1"]["inputs"]["color"] for p in prompts}) == 100  # distinct inputs: ComfyUI's cache skips none
    assert {p["1"]["class_type"] for p in prompts} == {"EmptyImage"} and prompts[0]["2"]["inputs"]["images"] == ["1", 0]
    with pytest.raises(ValueError, match="24-bit"):
        comfy.png_prompt(1 << 24)


def test_the_png_job_writes_one_flat_image_with_its_workflow(bench, tmp_path):
    Runtime(device="cpu", cache_dir=tmp_path / "cache").run(bench.png_workflow(7), out_dir=tmp_path)
    image = Image.open(tmp_path / "x.png")
    assert image.size == (64, 64) and image.getextrema() == ((0, 0), (0, 0), (0, 0))  # like EmptyImage's colour
    assert image.info["seed"] == "7" and '"io.save_image"' in image.info["workflow"]


def test_summary_is_the_exact_percentiles_and_refuses_a_failed_job(bench):
    results = [{"t0": 0.01 * i, "submit": 0.001, "first": 0.002 * (i + 1), "done": 0.1, "status": "succeeded"}
               for i in range(100)]
    s = bench.summarize(results)
    assert s["jobs_per_s"] == pytest.approx(100 / (0.99 + 0.1))  # last terminal event after the first POST
    assert s["first_p50"] == pytest.approx(0.002 * 51) and s["first_p99"] == pytest.approx(0.002 * 99)  # nearest rank
    assert "started_p50" not in s  # a time no job has is left out, not zero
    with pytest.raises(RuntimeError, match="1 of 2 jobs did not succeed"):
        bench.summarize([results[0], {"status": "client error: refused"}])


def test_the_script_runs_without_comfyui_and_says_how_to_add_it(bench, monkeypatch, capsys):
    for extra in ("fastapi", "uvicorn"):
        pytest.importorskip(extra, reason="the serve extra is not installed: pip install 'samplegraph[serve]'")
    for name in ("COMFYUI_DIR", "COMFYUI_PYTHON"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["serve.py", "--jobs", "2"])
    threads = torch.get_num_threads()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            monkeypatch.chdir(tmp)
            bench.main()
    finally:
        torch.set_num_threads(threads)  # main() sets one thread
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert "not installed: set COMFYUI_DIR" in rows["ComfyUI server"]
    for name in ("samplegraph serve, a stream per job", "direct Runtime.run loop"):
        assert float(rows[name].split("|")[2]) > 0  # jobs/s measured
