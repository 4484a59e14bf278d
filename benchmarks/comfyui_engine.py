"""ComfyUI's execution engine in its own interpreter, timed by benchmarks/comfyui_executor_driver.py and asked for
rounds over a pipe (benchmarks/executor_overhead.py's ComfyUI columns). Nothing of ComfyUI is imported here; the
install comes from COMFYUI_DIR / COMFYUI_PYTHON / COMFYUI_PYTHONPATH as for benchmarks/comfyui_server.py."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from comfyui_server import ComfyUIError, ComfyUIInstall

DRIVER = Path(__file__).resolve().parent / "comfyui_executor_driver.py"
MODES = ("none", "validate", "run", "hits")  # the driver's answer keys


class ComfyUIEngine:
    """The driver process; `rounds` sends one request and reads its one-line answer."""

    def __init__(self, install: ComfyUIInstall) -> None:
        self.install = install
        self._log = tempfile.NamedTemporaryFile("w+", prefix="comfyui-engine-", suffix=".log")
        env = {**os.environ, "PYTHONPATH": install.pythonpath, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([str(install.python), str(DRIVER), str(install.root)], cwd=install.root,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True)
        ready = self._read()
        if not ready.get("ready"):
            self.close()
            raise ComfyUIError(f"ComfyUI's engine did not start: {ready.get('error')}")
        self.torchvision_placeholder = bool(ready.get("torchvision_placeholder"))

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise ComfyUIError(f"the ComfyUI driver exited ({self.proc.poll()}): {self.log_tail()}")
        return json.loads(line)

    def log_tail(self, chars: int = 2000) -> str:
        self._log.flush()
        return Path(self._log.name).read_text()[-chars:]

    def rounds(self, shape: str, size: int, rounds: int = 1) -> dict[str, list[float]]:
        """Seconds per round of each mode in MODES for the case ("chain" or "fan-in" of `size` nodes); a new case
        is built and warmed up first (rounds=0: only that)."""
        self.proc.stdin.write(json.dumps({"shape": shape, "size": size, "rounds": rounds}) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise ComfyUIError(f"ComfyUI's engine failed on the {shape} of {size} nodes: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()

    def __enter__(self) -> ComfyUIEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_engine(env: Mapping[str, str]) -> ComfyUIEngine | str:
    """The engine of the install that `env` names, or why there is none ("not installed: ..." / "failed: ...")."""
    install = ComfyUIInstall.from_env(env)
    if isinstance(install, str):
        return install
    try:
        return ComfyUIEngine(install)
    except (ComfyUIError, OSError) as e:
        return f"failed: {e}"
