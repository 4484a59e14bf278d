"""`samplegraph serve` against a real uvicorn in a subprocess on a loopback port: submit, live progress,
outputs, cancel (queued and running), concurrency, kill -9 and restart, auth, and 4xx (never 500) on bad input.
The confinement of the files a workflow names is also checked in-process (runtime/confine.py)."""
from __future__ import annotations

import http.client
import json
import os
import stat
import threading
from pathlib import Path
from typing import get_args

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'samplegraph[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'samplegraph[serve]'")
websockets_sync = pytest.importorskip("websockets.sync.client", reason="websockets (serve extra) is missing")

import samplegraph.nodes.models  # noqa: E402
from samplegraph import Runtime  # noqa: E402
from samplegraph.graph.errors import WorkflowError  # noqa: E402
from samplegraph.nodes.api import Registry  # noqa: E402
from samplegraph.runtime.serve.jobs import prepare  # noqa: E402

from helpers_serve import Server, tiny_workflow  # noqa: E402

QUICKSTART = json.loads((Path(__file__).resolve().parents[1] / "workflows" / "quickstart.json").read_text())
WEIGHTS = Path(samplegraph.nodes.models.__file__).parent / "weights"  # the shipped weights: a model root
MAX_BODY = 65536


def forever(seed: int = 0) -> dict:
    """A job that runs until cancelled (100k Euler steps of a tiny batch: minutes on this machine)."""
    return tiny_workflow(seed=seed, steps=100_000, batch=4)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("serve"), workers=2,
                 extra=["--max-body", str(MAX_BODY), "--model-root", str(WEIGHTS), "--threads", "2"]).start()
    yield srv
    err = srv.stop()
    assert "Traceback" not in err, err


def test_quickstart_progress_and_outputs(server):
    job = server.submit(QUICKSTART, wait=60)
    assert job["status"] == "succeeded", job
    events = server.events(job["id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # sequenced, nothing skipped
    types = [e["type"] for e in events]
    assert types[:3] == ["queued", "running", "run_started"] and types[-1] == "succeeded"
    started = {e["node"] for e in events if e["type"] == "node_started"}
    finished = {e["node"]: e["cache"] for e in events if e["type"] == "node_finished"}
    assert started == set(finished) == set(QUICKSTART["nodes"])
    steps = [e for e in events if e["type"] == "step_progress"]
    assert steps and steps[-1]["step"] == steps[-1]["total"] == 18
    # Last-Event-ID replays from the next event on
    assert server.events(job["id"], last_event_id=5) == events[5:]
    assert server.events_so_far(job["id"]) == events
    # outputs: listed with sizes, downloaded byte for byte
    listed = {o["name"]: o for o in server.request("GET", f"/api/v1/jobs/{job['id']}/outputs").json()["outputs"]}
    assert {"samples.png", "samples.safetensors", "report.json"} <= set(listed)
    png = server.request("GET", listed["samples.png"]["url"])
    assert png.status == 200 and png.body[:8] == b"\x89PNG\r\n\x1a\n" and len(png.body) == listed["samples.png"]["size"]
    assert png.headers["content-type"] == "image/png"
    report = job["report"]
    assert report["status"] == "ok" and report["outputs"]["sliced_w2"] < 0.5
    # a re-run hits the shared cache: the cached nodes are reported as such
    again = server.submit(QUICKSTART, wait=60)
    cached = {e["node"]: e["cache"] for e in server.events(again["id"]) if e["type"] == "node_finished"}
    assert cached["sample"] == "memory" and cached["save"] == "uncached"


def test_threads_per_worker(server):
    """--threads 2 (the server's environment says OMP_NUM_THREADS=1): health reports it, and each job's report
    records the torch intra-op threads of the worker thread that ran it."""
    health = server.request("GET", "/api/v1/health").json()
    assert health["threads"] == 2 and health["workers"] == 2
    jobs = [server.submit(tiny_workflow(seed=40 + i)) for i in range(2)]  # both workers take one
    done = [server.job(job["id"], wait=60) for job in jobs]
    assert [j["status"] for j in done] == ["succeeded"] * 2
    assert [j["report"]["environment"]["torch_threads"] for j in done] == ["2", "2"]


def test_websocket_stream_equals_sse(server):
    job = server.submit(tiny_workflow(seed=7), wait=60)
    url = f"ws://127.0.0.1:{server.port}/api/v1/jobs/{job['id']}/ws?after=0"
    with websockets_sync.connect(url, open_timeout=30) as ws:
        got = [json.loads(m) for m in ws]
    assert got == server.events(job["id"])


def test_live_events_then_cancel_running_and_queued(server):
    running = [server.submit(forever(seed=s)) for s in (1, 2)]  # both workers busy
    queued = server.submit(tiny_workflow(seed=3))
    for job in running:
        step = server.wait_for_event(job["id"], "step_progress")  # live progress of a running job
        assert step["total"] == 100_000
    assert server.job(queued["id"])["status"] == "queued"
    reply = server.request("POST", f"/api/v1/jobs/{queued['id']}/cancel")
    assert reply.status == 202 and reply.json()["status"] == "cancelled"  # at once, never started
    for job in running:
        assert server.request("POST", f"/api/v1/jobs/{job['id']}/cancel").status == 202
    for job in running:
        done = server.job(job["id"], wait=60)
        assert done["status"] == "cancelled" and done["error"]["type"] == "RunCancelled"
    assert server.job(queued["id"])["attempts"] == 0
    again = server.request("POST", f"/api/v1/jobs/{queued['id']}/cancel")
    assert again.status == 409 and again.json()["error"]["job_status"] == "cancelled"
    # the queue goes on after cancellations and failures
    failing = tiny_workflow(seed=4)
    failing["nodes"]["model"] = {"kind": "model.safetensors", "params": {"path": str(WEIGHTS / "missing.safetensors")}}
    failed = server.submit(failing, wait=60)
    assert failed["status"] == "failed" and "missing.safetensors" in failed["error"]["message"]
    assert server.submit(tiny_workflow(seed=5), wait=60)["status"] == "succeeded"


def test_50_concurrent_submissions(server):
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def submit(seed: int) -> None:
        try:
            job = server.submit(tiny_workflow(seed=1000 + seed))
            with lock:
                ids.append(job["id"])
        except BaseException as e:  # noqa: BLE001  # reported below
            errors.append(e)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 50
    seeds = set()
    for job_id in ids:
        job = server.job(job_id, wait=120)
        assert job["status"] == "succeeded" and job["attempts"] == 1
        seeds.add(job["request"]["workflow"]["seed"])
        assert [e["type"] for e in server.events(job_id)].count("succeeded") == 1  # ran exactly once
    assert seeds == {1000 + i for i in range(50)}
    # pagination walks every job once
    seen, cursor = [], None
    while True:
        page = server.request("GET", "/api/v1/jobs?limit=7" + (f"&cursor={cursor}" if cursor else "")).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) and set(ids) <= set(seen)


def test_invalid_workflow_is_422_with_located_problems(server):
    bad = tiny_workflow()
    bad["nodes"]["solver"]["kind"] = "sampler.eulr"
    bad["nodes"]["sigmas"]["params"]["steps"] = -1
    reply = server.request("POST", "/api/v1/jobs", {"workflow": bad})
    assert reply.status == 422
    problems = reply.json()["error"]["problems"]
    located = {(p["node"], p["where"]) for p in problems}
    assert ("solver", "kind") in located and ("sigmas", "param 'steps'") in located
    # the same problems as `samplegraph validate` (Runtime.validate), in the same words
    with pytest.raises(WorkflowError) as e:
        rt = Runtime(device="cpu", cache=False)
        rt.validate(rt.load(bad)[0])
    assert [p["text"] for p in problems] == [str(p) for p in e.value.problems]
    # requested outputs are checked at submit time too
    reply = server.request("POST", "/api/v1/jobs", {"workflow": tiny_workflow(), "outputs": ["sample.nope"]})
    assert reply.status == 422 and "nope" in reply.json()["error"]["problems"][0]["message"]
    # overrides as in the CLI's --set are applied before validation
    reply = server.request("POST", "/api/v1/jobs", {"workflow": tiny_workflow(), "set": ["sigmas.steps=0"]})
    assert reply.status == 422 and reply.json()["error"]["problems"][0]["node"] == "sigmas"


@pytest.mark.parametrize("path", ["../escape.safetensors", "sub/../../escape.safetensors", "/tmp/escape.safetensors"])
def test_output_paths_outside_the_job_folder_are_refused(server, path):
    reply = server.request("POST", "/api/v1/jobs", {"workflow": tiny_workflow(), "overrides": {"save.path": path}})
    assert reply.status == 422, reply.body
    (problem,) = reply.json()["error"]["problems"]
    assert problem["node"] == "save" and problem["where"] == "param 'path'" and "outside" in problem["message"]


def test_model_paths_outside_the_model_roots_are_refused(server, tmp_path):
    wf = tiny_workflow()
    wf["nodes"]["model"] = {"kind": "model.safetensors", "params": {"path": str(tmp_path / "m.safetensors")}}
    reply = server.request("POST", "/api/v1/jobs", {"workflow": wf})
    assert reply.status == 422
    (problem,) = reply.json()["error"]["problems"]
    assert problem["node"] == "model" and problem["where"] == "param 'path'" and "model roots" in problem["message"]


def test_a_model_under_a_model_root_loads(server):
    wf = tiny_workflow(batch=2)
    wf["nodes"]["model"] = {"kind": "model.safetensors", "params": {"path": str(WEIGHTS / "digits_edm.safetensors")}}
    wf["nodes"]["noise"]["params"]["shape"] = [64]
    job = server.submit(wf, wait=60)
    assert job["status"] == "succeeded", job["error"]


def test_confinement_in_process(tmp_path):
    """prepare(): inputs inside a root pass, '..' out of a root (also through a diffusers subfolder) and symlinks
    leading out are refused; with no root every user file is refused; shipped weights need none."""
    rt = Runtime(device="cpu", cache=False)
    root, out = tmp_path / "models", tmp_path / "job"
    (root / "sub").mkdir(parents=True)
    (root / "link").symlink_to(tmp_path)
    out.mkdir()

    def request(kind: str, **params) -> dict:
        wf = {"version": 1, "nodes": {"m": {"kind": kind, "params": params}}, "outputs": ["m"]}
        return {"workflow": wf}

    prepare(rt, request("model.safetensors", path=str(root / "sub" / "a.safetensors")), out, [root])
    prepare(rt, request("model.char_lm"), out, [])  # the shipped weights
    refused = [request("model.safetensors", path=str(root / ".." / "a.safetensors")),
               request("model.safetensors", path=str(root / "link" / "a.safetensors")),
               request("model.diffusers", path=str(root), subfolder="../../etc")]
    for req in refused:
        with pytest.raises(WorkflowError, match="outside the server's model roots"):
            prepare(rt, req, out, [root])
    with pytest.raises(WorkflowError, match="none configured"):
        prepare(rt, request("model.safetensors", path=str(root / "a.safetensors")), out, [])
    wf = tiny_workflow(path="link/x.safetensors")
    (out / "link").symlink_to(tmp_path)
    with pytest.raises(WorkflowError, match="outside this job's output folder"):
        prepare(rt, {"workflow": wf}, out, [])


def test_every_node_naming_a_file_declares_it():
    """A parameter that names a file or folder to read must be declared by input_files() (or, for writers,
    output_files()), or the server could not confine it."""
    names = {"path", "weights", "folder", "file", "subfolder", "filename", "dir"}
    for kind, spec in Registry.default().specs.items():
        fields = spec.params.model_fields
        named = {n for n in names & set(fields) if str in (fields[n].annotation, *get_args(fields[n].annotation))}
        if named:
            assert callable(getattr(spec.params, "input_files", None)) or callable(
                getattr(spec.params, "output_files", None)), f"{kind}: {named} not declared"


def test_bad_requests_are_clear_4xx(server):
    job_id = server.submit(tiny_workflow(seed=11), wait=60)["id"]
    cases = [
        ("POST", "/api/v1/jobs", b"{not json", 400, "malformed_body"),
        ("POST", "/api/v1/jobs", b"[1, 2]", 400, "malformed_body"),
        ("POST", "/api/v1/jobs", b'{"workflow": 3}', 422, "invalid_request"),
        ("POST", "/api/v1/jobs", b'{"workflow": {}, "bogus": 1}', 422, "invalid_request"),
        ("POST", "/api/v1/jobs", b"\xff\xfe", 400, "malformed_body"),
        ("GET", "/api/v1/jobs/" + "0" * 32, None, 404, "not_found"),
        ("GET", "/api/v1/jobs/nonsense", None, 404, "not_found"),
        ("POST", "/api/v1/jobs/" + "f" * 32 + "/cancel", None, 404, "not_found"),
        ("GET", "/api/v1/jobs/" + "0" * 32 + "/events", None, 404, "not_found"),
        ("GET", "/api/v1/jobs?limit=0", None, 422, "invalid_request"),
        ("GET", "/api/v1/jobs?status=lost", None, 422, "invalid_request"),
        ("GET", f"/api/v1/jobs/{job_id}/outputs/../../samplegraph.db", None, 404, "not_found"),
        ("GET", f"/api/v1/jobs/{job_id}/outputs/..%2F..%2Fsamplegraph.db", None, 404, "not_found"),
        ("GET", f"/api/v1/jobs/{job_id}/outputs/%2Fetc%2Fpasswd", None, 404, "not_found"),
        ("GET", f"/api/v1/jobs/{job_id}/outputs/.x.safetensors.tmp", None, 404, "not_found"),
        ("GET", "/api/v1/nodes/no.such", None, 404, "not_found"),
        ("DELETE", "/api/v1/jobs", None, 405, "method_not_allowed"),
        ("POST", "/api/v1/jobs", b"{" + b" " * (MAX_BODY + 1) + b"}", 413, "too_large"),
    ]
    for method, path, raw, status, kind in cases:
        reply = server.request(method, path, raw=raw)
        assert (reply.status, reply.json()["error"]["type"]) == (status, kind), (method, path, reply.body)
        assert b"Traceback" not in reply.body
    # a chunked body (no Content-Length) past the limit is refused while it is read
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/api/v1/jobs", body=iter([b"{", b" " * MAX_BODY, b" }"]), encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"]["type"] == "too_large"
    conn.close()


def test_loopback_host_and_origin_checks(server):
    assert server.request("GET", "/api/v1/jobs", headers={"Host": "evil.example"}).status == 403  # DNS rebinding
    assert server.request("GET", "/api/v1/jobs", headers={"Origin": "http://evil.example"}).status == 403
    assert server.request("POST", "/api/v1/jobs", {"workflow": tiny_workflow()}, headers={"Origin": "null"}).status == 403
    same = f"http://127.0.0.1:{server.port}"
    assert server.request("GET", "/api/v1/jobs", headers={"Origin": same}).status == 200


def test_catalog_schema_openapi(server):
    nodes = server.request("GET", "/api/v1/nodes").json()["nodes"]
    assert set(nodes) == set(Registry.default().specs) and nodes["sampler.heun"]["kind"] == "sampler.heun"
    schema = server.request("GET", "/api/v1/schema").json()
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(QUICKSTART, schema)
    api = server.request("GET", "/api/v1/openapi.json").json()
    assert {"/api/v1/jobs", "/api/v1/jobs/{job_id}/events", "/api/v1/jobs/{job_id}/cancel"} <= set(api["paths"])


def test_kill_9_and_restart_loses_nothing(tmp_path):
    srv = Server(tmp_path / "state", workers=1).start()
    done = srv.submit(tiny_workflow(seed=20), wait=60)
    assert done["status"] == "succeeded"
    long_wf = tiny_workflow(seed=21, steps=20_000, batch=4)
    long_wf["nodes"]["sample"]["params"] = {"checkpoint_every": 1000, "checkpoint_seconds": None}
    interrupted = srv.submit(long_wf)
    queued = [srv.submit(tiny_workflow(seed=22 + i)) for i in range(3)]
    srv.wait_for_event(interrupted["id"], "step_progress", until=lambda e: e["step"] >= 3000)  # 2+ checkpoints
    before = srv.events(done["id"])
    srv.kill()  # SIGKILL: no shutdown code runs

    srv = Server(tmp_path / "state", workers=1, port=srv.port).start()
    try:
        again = srv.job(interrupted["id"], wait=120)
        assert again["status"] == "succeeded" and again["attempts"] == 2
        types = [e["type"] for e in srv.events(interrupted["id"])]
        assert types.count("running") == 2 and "requeued" in types and types[-1] == "succeeded"
        sample = next(n for n in again["report"]["nodes"] if n["node"] == "sample")
        assert sample["metrics"]["resumed_from_step"] >= 2000  # the re-run resumed from a checkpoint
        for job in queued:
            assert srv.job(job["id"], wait=60)["status"] == "succeeded"
        assert srv.events(done["id"]) == before  # history intact
        assert srv.request("GET", f"/api/v1/jobs/{done['id']}/outputs/x.safetensors").status == 200
        listed = srv.request("GET", "/api/v1/jobs").json()
        assert len(listed["jobs"]) == 5 and listed["counts"]["succeeded"] == 5
        with pytest.raises(RuntimeError, match="another samplegraph server is using the state dir"):
            Server(tmp_path / "state").start()  # one writer per state dir
    finally:
        srv.stop()


def test_graceful_stop_requeues_the_running_job(tmp_path):
    srv = Server(tmp_path / "state").start()
    job = srv.submit(forever(seed=30))
    srv.wait_for_event(job["id"], "step_progress")
    assert "Traceback" not in srv.stop()  # SIGTERM: uvicorn's graceful stop cancels the run...
    srv = Server(tmp_path / "state", port=srv.port).start()
    try:
        srv.wait_for_event(job["id"], "step_progress")  # ...and the next start runs it again
        types = [e["type"] for e in srv.events_so_far(job["id"])]
        assert "requeued" in types and "cancelled" not in types and types.count("running") == 2
        assert srv.request("POST", f"/api/v1/jobs/{job['id']}/cancel").status == 202
        assert srv.job(job["id"], wait=60)["status"] == "cancelled"
    finally:
        srv.stop()


def test_token_required_beyond_loopback(tmp_path):
    srv = Server(tmp_path / "state", host="0.0.0.0").start()
    try:
        token_file = tmp_path / "state" / "token"
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        token = token_file.read_text().strip()
        assert srv.request("GET", "/api/v1/health").status == 200  # liveness stays open
        refused = srv.request("GET", "/api/v1/jobs")
        assert refused.status == 401 and refused.json()["error"]["type"] == "unauthorized"
        assert srv.request("GET", "/api/v1/jobs", headers={"Authorization": "Bearer wrong"}).status == 401
        assert srv.request("POST", "/api/v1/jobs", {"workflow": tiny_workflow()}).status == 401
        assert srv.request("GET", "/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status == 200
        by_query = srv.request("GET", f"/api/v1/jobs?token={token}")
        assert by_query.status == 200 and "samplegraph_token=" in by_query.headers["set-cookie"]
        assert srv.request("GET", "/api/v1/jobs", headers={"Cookie": f"samplegraph_token={token}"}).status == 200
        srv.token = token
        job = srv.submit(tiny_workflow(), wait=60)
        with pytest.raises(Exception):  # the WebSocket is refused without the token
            with websockets_sync.connect(f"ws://127.0.0.1:{srv.port}/api/v1/jobs/{job['id']}/ws", open_timeout=30):
                pass
        url = f"ws://127.0.0.1:{srv.port}/api/v1/jobs/{job['id']}/ws?token={token}"
        with websockets_sync.connect(url, open_timeout=30) as ws:
            got = [json.loads(m) for m in ws]  # read to the end: a client that stops reading stalls its close
        assert got[0]["type"] == "queued" and got[-1]["type"] == "succeeded"
    finally:
        srv.stop()
