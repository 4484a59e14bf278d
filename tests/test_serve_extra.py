"""The serve extra stays optional: the core never imports the web stack, and `samplegraph serve` without it
says which package is missing and how to install it (exit 1, no traceback)."""
from __future__ import annotations

import subprocess
import sys

from helpers_serve import PACKAGE_PARENT

CHECK = """
import sys
sys.modules["fastapi"] = None  # as if the extra were not installed
import samplegraph, samplegraph.runtime.cli as cli
from samplegraph import Runtime
Runtime(device="cpu", cache=False).run({"version": 1, "nodes": {"s": {"kind": "schedule.karras"}}, "outputs": ["s"]})
web = sorted(m for m in ("uvicorn", "starlette", "websockets") if m in sys.modules)
assert not web, web
sys.exit(cli.main(["serve", "--state-dir", sys.argv[1]]))
"""


def test_serve_without_the_extra(tmp_path):
    done = subprocess.run([sys.executable, "-c", CHECK, str(tmp_path / "state")], capture_output=True, text=True,
                          env={"PYTHONPATH": str(PACKAGE_PARENT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
                          timeout=120)
    assert done.returncode == 1, done.stderr
    assert "pip install 'samplegraph[serve]'" in done.stderr and "fastapi" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists()  # nothing was created
