"""A real `samplegraph serve` in a subprocess on a free port, and a small stdlib HTTP client for it
(tests/test_serve.py, tests/test_serve_page.py, benchmarks/serve.py)."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import samplegraph

# the folder that holds `samplegraph` as imported here (not resolved: the package may be a symlink to a checkout)
PACKAGE_PARENT = Path(os.path.abspath(samplegraph.__file__)).parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_workflow(seed: int = 0, steps: int = 4, batch: int = 8, path: str = "x.safetensors") -> dict[str, Any]:
    """A GMM sample of `batch` points in `steps` Euler steps, saved as a tensor file."""
    return {"version": 1, "seed": seed, "nodes": {
        "model": {"kind": "model.gmm", "params": {"preset": "ring"}},
        "sigmas": {"kind": "schedule.karras", "params": {"steps": steps}},
        "noise": {"kind": "latent.noise", "params": {"batch": batch, "shape": [2]}, "inputs": {"sigmas": "sigmas"}},
        "solver": {"kind": "sampler.euler"},
        "sample": {"kind": "sample", "params": {"checkpoint_seconds": None},
                   "inputs": {"denoise": "model", "sigmas": "sigmas", "sampler": "solver", "latent": "noise"}},
        "save": {"kind": "io.save_tensor", "params": {"path": path}, "inputs": {"x": "sample"}}},
        "outputs": ["save"]}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    state_dir: Path
    host: str = "127.0.0.1"
    workers: int = 1
    extra: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    token: str | None = None

    def start(self, timeout: float = 90.0) -> Server:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_PARENT),
                                                                         os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": "1"}
        cmd = [sys.executable, "-m", "samplegraph", "serve", "--host", self.host, "--port", str(self.port),
               "--state-dir", str(self.state_dir), "--workers", str(self.workers), "--device", "cpu", *self.extra]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if self.request("GET", "/api/v1/health").status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError("server did not answer /api/v1/health in time")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def stop(self) -> str:
        """SIGTERM (uvicorn's graceful stop); the server's stderr."""
        if self.proc is None:
            return ""
        self.kill(signal.SIGTERM)
        err = self.proc.stderr.read() if self.proc.stderr else ""
        self.proc.stdout.close()
        self.proc.stderr.close()
        return err

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                raw: bytes | None = None, auth: bool = True, timeout: float = 60.0) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        hdrs = dict(headers or {})
        if auth and self.token is not None:
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def submit(self, workflow: dict[str, Any], wait: float = 0, **fields: Any) -> dict[str, Any]:
        reply = self.request("POST", f"/api/v1/jobs?wait={wait}", {"workflow": workflow, **fields})
        assert reply.status == 201, reply.body
        return reply.json()

    def job(self, job_id: str, wait: float = 0) -> dict[str, Any]:
        reply = self.request("GET", f"/api/v1/jobs/{job_id}?wait={wait}")
        assert reply.status == 200, reply.body
        return reply.json()

    def events(self, job_id: str, last_event_id: int | None = None) -> list[dict[str, Any]]:
        """The job's SSE stream read to its end (the server closes it after the terminal event)."""
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        reply = self.request("GET", f"/api/v1/jobs/{job_id}/events", headers=headers)
        assert reply.status == 200 and reply.headers["content-type"].startswith("text/event-stream")
        return parse_sse(reply.body.decode())

    def events_so_far(self, job_id: str) -> list[dict[str, Any]]:
        reply = self.request("GET", f"/api/v1/jobs/{job_id}/events?stream=false")
        assert reply.status == 200, reply.body
        return reply.json()["events"]

    def wait_for_event(self, job_id: str, type_: str, timeout: float = 60.0,
                       until: Callable[[dict[str, Any]], bool] = lambda e: True) -> dict[str, Any]:
        """Read the live SSE stream until an event of `type_` that satisfies `until` (then drop the connection)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        conn.request("GET", f"/api/v1/jobs/{job_id}/events", headers=headers)
        resp = conn.getresponse()
        block: list[str] = []
        try:
            while True:
                line = resp.fp.readline().decode()
                if not line:
                    raise AssertionError(f"stream of {job_id} ended before a '{type_}' event")
                if line.strip():
                    block.append(line)
                    continue
                events = parse_sse("".join(block) + "\n")
                block = []
                if events and events[0]["type"] == type_ and until(events[0]):
                    return events[0]
        finally:
            conn.close()


def parse_sse(text: str) -> list[dict[str, Any]]:
    """The data of each SSE message, checking that its id and event name match the data."""
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.strip()
        if "data" in fields:
            data = json.loads(fields["data"])
            assert int(fields["id"]) == data["seq"] and fields["event"] == data["type"]
            out.append(data)
    return out
