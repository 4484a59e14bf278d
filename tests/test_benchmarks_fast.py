"""benchmarks/fast.py --quick end to end on gmm and digits with two baselines (~5 s): the tables have one row
per entry and one column per budget, the NFE each row spends is the one its sample node counted, more NFE buys
quality for Euler, an entry whose node kinds are not registered is skipped and listed, and every row is a
workflow that runs on its own."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from samplegraph.runtime.api import Runtime

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
BUDGETS = [5, 8, 10, 15, 20, 50]
CELL = re.compile(r"(?P<q>[\d.e+-]+) / (?P<wall>[\d.e+-]+)s( \[(?P<nfe>\d+)\])?")
MISSING = '''from fast_core import solver_entry
ENTRIES = [solver_entry("not yet built", "solver", "sampler.not_registered_anywhere")]
'''


def fast(*args: str) -> str:
    proc = subprocess.run([sys.executable, "fast.py", *args], cwd=BENCH, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def matrix(section: str, heading_start: str) -> tuple[list[str], dict[str, list[str]]]:
    """(header cells, row name -> cells) of the first markdown table whose header starts with heading_start."""
    lines = section.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(heading_start))
    header = [c.strip() for c in lines[i].strip("|").split("|")]
    rows = {}
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return header, rows


def test_quick_run_tables_nfe_accounting_and_skipped_entries(tmp_path):
    entries = tmp_path / "entries"
    entries.mkdir()
    shutil.copy(BENCH / "fast_entries" / "baseline.py", entries / "baseline.py")
    (entries / "solver_missing.py").write_text(MISSING)
    out = fast("--quick", "--models", "gmm", "digits", "--families", "baseline", "solver", "--entries", "Euler",
               "Heun", "not yet built", "--no-plot", "--out", str(tmp_path), "--entries-dir", str(entries))
    assert out.strip().endswith((tmp_path / "fast_quick.md").read_text().strip())  # progress lines, then the file
    _, after = out.split("## gmm", 1)
    gmm, digits = after.split("## digits", 1)
    for section in (gmm, digits):
        header, rows = matrix(section, "| method |")
        assert header == ["method", "family", *[f"NFE {b}" for b in BUDGETS], "calibration s (row)"]
        assert list(rows) == ["Euler", "Heun"]
        cells = {name: [CELL.fullmatch(c) for c in v[1:-1]] for name, v in rows.items()}
        assert all(cells["Euler"]) and all(cells["Heun"]), rows
        assert all(m["nfe"] is None for m in cells["Euler"])  # one evaluation per step: exactly the budget
        heun = [int(m["nfe"] or b) for m, b in zip(cells["Heun"], BUDGETS)]
        assert heun == [5, 7, 9, 15, 19, 49]  # 2 per step, 1 for the last step to 0: odd counts only
        euler = [float(m["q"]) for m in cells["Euler"]]
        assert euler[-1] < euler[0], euler  # 50 NFE beat 5 (gmm error ~1.1 -> 0.065, FD_digits ~1.35 -> 0.84)
        best_header, best = matrix(section, "| NFE budget |")
        assert list(best) == [str(b) for b in BUDGETS] and best_header[1] == "best configuration"
        assert all(v[0] in ("Euler", "Heun") for v in best.values())
    assert "Skipped:\n- not yet built (solver): kinds not registered: sampler.not_registered_anywhere" in out


def test_a_dumped_row_is_a_workflow_that_runs_on_its_own():
    wf = json.loads(fast("--dump", "Heun", "--models", "digits", "--nfe", "8"))
    assert wf["nodes"]["sigmas"]["params"]["steps"] == 4  # 4 Heun steps = 7 NFE, the most within 8
    wf["nodes"]["latent"]["params"]["batch"] = 3
    result = Runtime(device="cpu").run(wf)
    assert result["sample"].shape == (3, 8, 8) and torch.isfinite(result["sample"]).all()
    assert result.report.node("sample").nfe == 7
