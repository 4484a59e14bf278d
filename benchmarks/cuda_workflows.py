"""Every light workflow in workflows/ (tests/helpers_workflows.py) on CUDA and on the CPU, in one process.

    python benchmarks/cuda_workflows.py [--budget-s 140] [--device cuda]

Rows: the workflow, whether it ran on each device (else the error's type and first words), seconds per run
(no cache; the first CUDA run of a process pays CUDA's start-up), and for each tensor or number output the
largest |device - cpu|: the counter-based noise draws the same numbers on both devices, so what remains is
kernel rounding (or a device-dependent bug). Workflows not reached within --budget-s are listed as not run.
Without CUDA it compares the CPU with itself (a dry run of the script)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from common import table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
HEADERS = ["workflow", "device run", "device s", "cpu s", "max |device - cpu| per output"]


def timed_run(path: Path, device: str, out: Path) -> tuple[float, dict[str, Any] | None, str]:
    """(seconds, outputs or None, "ok" or the error's type and message) of one uncached run."""
    from samplegraph import Runtime
    start = time.perf_counter()
    try:
        outputs = Runtime(device=device, cache=False).run(path, out_dir=out).outputs
        return time.perf_counter() - start, outputs, "ok"
    except Exception as e:  # a row, not a crash: the table reports every workflow
        return time.perf_counter() - start, None, f"{type(e).__name__}: {str(e)[:120]}"


def differences(ours: dict[str, Any], cpu: dict[str, Any]) -> str:
    """'name: max abs difference' for each float tensor or number output both runs gave."""
    parts = []
    for name, value in ours.items():
        other = cpu.get(name)
        if isinstance(value, torch.Tensor) and isinstance(other, torch.Tensor) and value.is_floating_point() \
                and value.shape == other.shape:
            parts.append(f"{name}: {(value.detach().cpu().double() - other.double()).abs().max().item():.1e}")
        elif isinstance(value, (int, float)) and isinstance(other, (int, float)) and not isinstance(value, bool):
            parts.append(f"{name}: {abs(value - other):.1e}")
    return ", ".join(parts)


def rows(device: str, budget_s: float, out: Path) -> list[list[object]]:
    from helpers_workflows import LIGHT_WORKFLOWS
    deadline = time.monotonic() + budget_s
    result = []
    for path in LIGHT_WORKFLOWS:
        if time.monotonic() > deadline:
            result.append([path.stem, "not run (budget)", "", "", ""])
            continue
        dev_s, dev_out, dev_status = timed_run(path, device, out / device / path.stem)
        cpu_s, cpu_out, cpu_status = timed_run(path, "cpu", out / "cpu" / path.stem)
        diff = differences(dev_out, cpu_out) if dev_out is not None and cpu_out is not None else cpu_status
        result.append([path.stem, dev_status, dev_s, cpu_s, diff[:160]])
        print(" | ".join(str(c) for c in result[-1]), flush=True)
    return result


def main() -> None:
    import tempfile
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--budget-s", type=float, default=140.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        found = rows(args.device, args.budget_s, Path(out))
    print(f"\n{args.device} against cpu, {torch.get_num_threads()} CPU thread(s)\n")
    print(table(HEADERS, found))


if __name__ == "__main__":
    main()
