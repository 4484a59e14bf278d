"""benchmarks/search.py --quick end to end (the smoke version, ~10 s CPU): every strategy is measured on
both tasks, the NFE per sample follows the budget, more budget buys reward, and both claims are checked."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ["best_of_n", "smc", "tds", "fkc", "svdd", "beam", "zero_order", "paths", "rollover", "dts", "dts*"]


def rows(text: str, heading: str) -> dict[str, list[str]]:
    """strategy -> cells of the markdown matrix that follows `heading` in text."""
    block = text.split(heading, 1)[1].split("\n\n", 1)[0]
    return {cells[0]: cells[1:] for line in block.splitlines()[3:]
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}


def test_quick_search_benchmark_runs_and_reports_every_strategy_and_both_claims():
    proc = subprocess.run([sys.executable, "search.py", "--quick", "--no-plot"], cwd=ROOT / "benchmarks",
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gmm, digits = proc.stdout.split("## digits", 1)
    for section, names in ((gmm, STRATEGIES), (digits, [s for s in STRATEGIES if s != "fkc"])):
        reward = rows(section, "reward by budget")
        assert list(reward) == names, reward  # fkc needs the reward as a model: the GMM only
        assert all(c == "-" or re.fullmatch(r"-?[\d.e+-]+( \(\d+\.\dx\))?", c) for v in reward.values() for c in v)
        best = [float(c) for c in reward["best_of_n"]]  # 1x, 2x, 4x; measured -17, -9.9, -3.0 on the GMM
        assert best[0] < best[1] < best[2], best
        assert section.count("Claim: DTS* reaches") == 1 and section.count("Claim: DTS matches") == 2
        assert "rejection (exact tilted)" in section
    sw = rows(gmm, "sw2 by budget")
    assert float(sw["smc"][2]) < float(sw["smc"][0]), sw["smc"]  # steering moves samples towards the target
