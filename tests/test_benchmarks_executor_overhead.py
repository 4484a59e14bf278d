"""benchmarks/executor_overhead.py's ComfyUI columns without ComfyUI: the driver's API-format prompts are well formed
(every link names an existing node's output and a declared input, one OUTPUT_NODE, and evaluating them with the
driver's own V1 node classes gives the value the driver checks ComfyUI's output against), the engine degrades to
"not installed" / "failed" with the reason, and the script prints its table with the ComfyUI columns marked."""
import argparse
import sys
from graphlib import TopologicalSorter

import pytest
import torch

from helpers_benchmarks import benchmark_modules


@pytest.fixture(scope="module")
def modules():
    with benchmark_modules("executor_overhead", "comfyui_engine", "comfyui_executor_driver") as found:
        yield found


def evaluate(prompt, classes):
    """Run an API-format prompt as ComfyUI's V1 contract says: inputs are widget values or [node id, output
    index] links, FUNCTION returns a tuple of RETURN_TYPES or {"ui": ..., "result": tuple}; the UI values of the
    OUTPUT_NODEs."""
    order = TopologicalSorter({k: [v[0] for v in n["inputs"].values() if isinstance(v, list)]
                               for k, n in prompt.items()}).static_order()
    results, ui = {}, {}
    for key in order:
        cls = classes[prompt[key]["class_type"]]
        kwargs = {name: results[v[0]][v[1]] if isinstance(v, list) else v for name, v in prompt[key]["inputs"].items()}
        out = getattr(cls(), cls.FUNCTION)(**kwargs)
        if isinstance(out, dict):
            ui[key] = out["ui"]
            out = out["result"]
        assert len(out) == len(cls.RETURN_TYPES)
        results[key] = out
    return ui


@pytest.mark.parametrize("shape,size", [("chain", 2), ("chain", 7), ("fan-in", 2), ("fan-in", 6)])
def test_the_driver_prompts_are_well_formed_api_graphs(modules, shape, size):
    driver = modules[2]
    prompt, classes, expected = driver.build(shape, size)
    assert len(prompt) == size and set(prompt) == {str(i) for i in range(size)}
    for key, n in prompt.items():
        cls = classes[n["class_type"]]
        declared = cls.INPUT_TYPES()["required"]
        assert set(n["inputs"]) == set(declared), key
        for name, value in n["inputs"].items():
            if isinstance(value, list):  # a link: an existing node's output of the declared type
                source = classes[prompt[value[0]]["class_type"]]
                assert value[1] == 0 and source.RETURN_TYPES[0] == declared[name][0] == "FLOAT"
                assert declared[name][1].get("forceInput")
    outputs = [k for k, n in prompt.items() if getattr(classes[n["class_type"]], "OUTPUT_NODE", False)]
    assert outputs == [str(size - 1)]  # the last node, so validate_prompt executes the whole graph
    assert evaluate(prompt, classes) == {str(size - 1): {"value": [expected]}}
    assert expected == (size - 1 if shape == "chain" else sum(range(size - 1)))


def test_the_driver_refuses_shapes_it_cannot_build(modules):
    driver = modules[2]
    with pytest.raises(ValueError, match="n >= 2"):
        driver.build("chain", 1)
    with pytest.raises(ValueError, match="unknown shape"):
        driver.build("diamond", 5)


def test_the_engine_says_why_it_is_absent(modules, tmp_path):
    engine = modules[1]
    missing = engine.start_engine({})
    assert missing.startswith("not installed") and "COMFYUI_DIR" in missing
    (tmp_path / "main.py").write_text("")  # a checkout without ComfyUI's modules: the driver cannot import them
    failed = engine.start_engine({"COMFYUI_DIR": str(tmp_path), "COMFYUI_PYTHON": sys.executable})
    assert isinstance(failed, str) and failed.startswith("failed") and "did not import" in failed


def test_comfyui_rounds_interleave_and_their_cells_are_per_node(modules):
    bench = modules[0]
    calls = []

    def comfy(rounds):
        calls.append(rounds)  # the k-th round's calls take 4k ms
        return {m: [0.004 * (len(calls) - 1)] * rounds for m in ("none", "validate", "run", "hits")}

    t = bench.measure(bench.Registry([bench.Const, bench.Inc, bench.Sum]), bench.chain(4), bench.dask_chain(4),
                      "n3", 3, None, comfy)
    assert calls == [0, 1, 1, 1] and len(t["comfy_none"]) == len(t["run"]) == 3  # warm-up, then one a round
    cells = bench.comfy_cells(t, 1e6 / 4, None)
    assert cells[0] == "2e+03 (1e+03)"  # 0.004, 0.008, 0.012 s over 4 nodes, in µs/node: median 2000, min 1000
    assert len(cells) == len(bench.COMFY_HEADERS)
    assert bench.comfy_cells(t, 1.0, "not installed") == ["not installed"] + ["-"] * 5


def test_a_failing_comfyui_case_says_so_in_its_row_and_the_others_still_run(modules):
    bench, engine = modules[0], modules[1]

    class Broken:
        def rounds(self, shape, size, rounds):
            raise engine.ComfyUIError(f"ComfyUI's engine failed on the {shape}:\n| RecursionError")

    args = argparse.Namespace(sizes=[4], fan_in=[2], repeat=1, comfyui_max_nodes=3)
    rows = bench.run_cases(args, bench.Registry([bench.Const, bench.Inc, bench.Sum]), None, Broken())
    assert rows[0][8] == "skipped: over --comfyui-max-nodes"  # 4 nodes > 3: never asked
    assert rows[1][8] == "failed: ComfyUI's engine failed on the fan-in: / RecursionError"  # one table line
    assert all(cell != "-" for cell in rows[1][2:8])  # samplegraph's own cells are still measured


def test_the_script_runs_without_comfyui_and_says_how_to_add_it(modules, monkeypatch, capsys):
    bench = modules[0]
    for name in ("COMFYUI_DIR", "COMFYUI_PYTHON"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["executor_overhead.py", "--sizes", "5", "--fan-in", "3", "--repeat", "1"])
    threads = torch.get_num_threads()
    try:
        bench.main()
    finally:
        torch.set_num_threads(threads)  # main() pins one thread for its timings
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| chain") or line.startswith("| fan-in")]
    assert len(rows) == 2 and all("| not installed | - |" in row for row in rows)
    assert "ComfyUI µs/node (no cache)" in out and "ComfyUI: not installed: set COMFYUI_DIR" in out
