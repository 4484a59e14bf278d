"""A ComfyUI server from a local checkout, run headless on CPU, and a client for one job over its HTTP and
WebSocket API (benchmarks/serve.py's ComfyUI row). Nothing of ComfyUI is imported here: it runs in its own
interpreter (COMFYUI_PYTHON, a venv with its requirements), talked to over loopback only.

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python [COMFYUI_PYTHONPATH=...] \
        python benchmarks/serve.py

The client follows ComfyUI's documented API (script_examples/websockets_api_example.py in its repository):
open `/ws?clientId=C`, POST `/prompt` {"prompt": API graph, "client_id": C}, then read that socket's JSON
messages for the returned prompt_id: "execution_start" when the queue's worker takes the prompt, and
"execution_success" (or "execution_error" / "execution_interrupted") at its end."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import concurrently

HOW_TO = ("set COMFYUI_DIR to a ComfyUI checkout and COMFYUI_PYTHON to a Python with its requirements.txt "
          "installed (COMFYUI_PYTHONPATH: extra import paths for that interpreter only)")
TERMINAL = {"execution_success": "succeeded", "execution_error": "failed", "execution_interrupted": "cancelled"}


class ComfyUIError(RuntimeError):
    """ComfyUI could not be started or refused a job."""


@dataclass(frozen=True)
class ComfyUIInstall:
    root: Path  # the checkout (holds main.py)
    python: Path
    pythonpath: str = ""

    @staticmethod
    def from_env(env: Mapping[str, str]) -> ComfyUIInstall | str:
        """The install named by COMFYUI_DIR / COMFYUI_PYTHON, or why there is none ("not installed: ...")."""
        root, python = env.get("COMFYUI_DIR"), env.get("COMFYUI_PYTHON")
        if not root:
            return f"not installed: {HOW_TO}"
        if not (Path(root) / "main.py").is_file():
            return f"not installed: COMFYUI_DIR={root} has no main.py; {HOW_TO}"
        if not python or not os.access(python, os.X_OK):
            return f"not installed: COMFYUI_PYTHON={python!r} is not an executable interpreter; {HOW_TO}"
        return ComfyUIInstall(Path(root), Path(python), env.get("COMFYUI_PYTHONPATH", ""))

    def version(self) -> str:
        """`comfyui_version.__version__` read from the checkout's file (not imported)."""
        text = (self.root / "comfyui_version.py").read_text() if (self.root / "comfyui_version.py").is_file() else ""
        for line in text.splitlines():
            if line.startswith("__version__"):
                return line.split("=", 1)[1].strip().strip("\"'")
        return "unknown version"


def png_prompt(color: int, size: int = 64) -> dict[str, Any]:
    """A ComfyUI API graph that needs no model file: EmptyImage(size x size, one RGB colour) -> SaveImage (PNG
    with the prompt in its metadata). The colour varies per job so that ComfyUI's cache never skips a job."""
    if not 0 <= color <= 0xFFFFFF:
        raise ValueError(f"color must be a 24-bit RGB value, got {color}")
    return {"1": {"class_type": "EmptyImage",
                  "inputs": {"width": size, "height": size, "batch_size": 1, "color": color}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}}}


@dataclass
class ComfyUIServer:
    install: ComfyUIInstall
    port: int
    proc: subprocess.Popen | None = None
    startup_s: float = 0.0
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def start(self, timeout: float = 300.0) -> ComfyUIServer:
        """`main.py --cpu` on loopback with every writable folder (output, temp, input, user, database) in a
        temporary directory; returns once GET /system_stats answers."""
        self._tmp = tempfile.TemporaryDirectory(prefix="comfyui-bench-")
        tmp = Path(self._tmp.name)
        dirs = {name: tmp / name for name in ("output", "temp", "input", "user")}
        for d in dirs.values():
            d.mkdir()
        cmd = [str(self.install.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--database-url", f"sqlite:///{tmp / 'comfyui.db'}",
               *[a for name, d in dirs.items() for a in (f"--{name}-directory", str(d))]]
        env = {**os.environ, "PYTHONPATH": self.install.pythonpath, "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=self.install.root, env=env, stdout=subprocess.DEVNULL,
                                     stderr=open(tmp / "stderr.log", "w"))
        while time.perf_counter() - start < timeout:
            if self.proc.poll() is not None:
                raise ComfyUIError(f"ComfyUI exited {self.proc.returncode} at start: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/system_stats", timeout=5) as r:
                    if r.status == 200:
                        self.startup_s = time.perf_counter() - start
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise ComfyUIError(f"ComfyUI did not answer /system_stats within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        return (Path(self._tmp.name) / "stderr.log").read_text()[-chars:] if self._tmp else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def submit(self, prompt: dict[str, Any], client_id: str, prompt_id: str | None = None) -> str:
        """POST /prompt (with our own prompt_id, if given); its prompt_id. A refused graph (400: node_errors)
        raises ComfyUIError."""
        body = json.dumps({"prompt": prompt, "client_id": client_id}
                          | ({"prompt_id": prompt_id} if prompt_id else {})).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/prompt", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read())["prompt_id"]
        except urllib.error.HTTPError as e:
            raise ComfyUIError(f"ComfyUI refused the prompt ({e.code}): {e.read()[:500]!r}") from e

    def run_timed(self, prompt: dict[str, Any], barrier: threading.Barrier | None = None) -> dict[str, Any]:
        """Submit one prompt over a fresh WebSocket (connected first; then `barrier`, if any, is passed); seconds
        from the POST to it returning ("submit"), to the first message about this prompt ("first"), to
        execution_start ("started") and to its terminal message ("done"), plus "t0" (the POST's
        time.perf_counter()) and "status"."""
        from websockets.sync.client import connect

        client_id = uuid.uuid4().hex
        with connect(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", max_size=None,
                     open_timeout=120) as ws:
            if barrier is not None:
                barrier.wait()
            t0 = time.perf_counter()
            prompt_id = self.submit(prompt, client_id)
            times: dict[str, Any] = {"submit": time.perf_counter() - t0, "t0": t0}  # then messages, read late
            seen: dict[str, dict[str, Any]] = {prompt_id: {}}
            while "status" not in seen[prompt_id]:
                record(ws.recv(timeout=300), seen)
        return relative(times, seen[prompt_id])

    def run_shared_socket(self, prompts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """All prompts from one client: one WebSocket (read by one thread) and one POST thread per prompt, with
        prompt ids chosen here so that no message can come before its id is known. Times as `run_timed`."""
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        client_id = uuid.uuid4().hex
        ids = [uuid.uuid4().hex for _ in prompts]
        seen: dict[str, dict[str, Any]] = {i: {} for i in ids}
        with connect(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", max_size=None,
                     open_timeout=120) as ws:
            def read() -> None:
                try:
                    while any("status" not in s for s in seen.values()):
                        record(ws.recv(timeout=300), seen)
                except (ConnectionClosed, TimeoutError):
                    return  # the prompts without a terminal message fail the run

            reader = threading.Thread(target=read, daemon=True)
            reader.start()

            def post(i: int, barrier: threading.Barrier) -> dict[str, Any]:
                barrier.wait()
                t0 = time.perf_counter()
                self.submit(prompts[i], client_id, ids[i])
                return {"submit": time.perf_counter() - t0, "t0": t0}

            posted = concurrently(len(prompts), post)
            if any("t0" not in p for p in posted):  # a POST failed: its terminal message never comes
                return posted
            reader.join()
        return [relative(p, seen[i]) for p, i in zip(posted, ids)]


def relative(post: dict[str, Any], arrivals: dict[str, Any]) -> dict[str, Any]:
    """A POST's times with the arrival times of its prompt's messages as seconds after the POST."""
    return post | {k: v if k == "status" else v - post["t0"] for k, v in arrivals.items()}


def record(message: str | bytes, seen: dict[str, dict[str, Any]]) -> None:
    """Note the arrival time (time.perf_counter()) of the first message, of execution_start and of the terminal
    message of each prompt in `seen`; other messages ("status" broadcasts of the queue length, other prompts',
    binary preview frames) are skipped."""
    if isinstance(message, bytes):
        return
    event = json.loads(message)
    times = seen.get(event.get("data", {}).get("prompt_id"))
    if times is None:
        return
    now = time.perf_counter()
    times.setdefault("first", now)
    if event["type"] == "execution_start":
        times.setdefault("started", now)
    if event["type"] in TERMINAL:
        times["done"], times["status"] = now, TERMINAL[event["type"]]
