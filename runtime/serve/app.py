"""The ASGI app (FastAPI): routes under /api/v1 over a ServerState (store, workers, runtime).

Every error is a JSON body {"error": {"type", "message", ...}} with a 4xx status; an unexpected exception is
logged on the server and answered 500 {"error": {"type": "internal"}}, never with a traceback."""
from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import traceback
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...graph.errors import WorkflowError
from ...graph.schema import workflow_schema
from ...graph.workflow import decode_text, parse_json
from ..api import Runtime
from .jobs import Notifier, Workers, prepare, problems_json, wait_for_news
from .security import Guard
from .store import TERMINAL, Job, Store

API = "/api/v1"
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
MAX_WAIT_S = 300.0
KEEPALIVE_S = 15.0
STATIC = Path(__file__).parent / "static"
# the page loads nothing from elsewhere and runs no inline script
PAGE_HEADERS = {"content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                                           "frame-ancestors 'none'", "x-content-type-options": "nosniff"}


@dataclass
class ServerState:
    store: Store
    runtime: Runtime
    workers: Workers
    notifier: Notifier
    model_roots: list[Path]
    max_body: int
    workflows_dir: Path | None = None
    started: float = field(default_factory=time.time)


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.kind, self.message, self.extra = status, kind, message, extra


def error_response(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message, **extra}}, status_code=status)


def create_app(state: ServerState, token: str | None, loopback: bool) -> Any:
    """The app, wrapped in the Guard (token, Host/Origin, body size)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        state.workers.start()
        yield
        await asyncio.to_thread(state.workers.stop)

    app = FastAPI(title="samplegraph", version="1", lifespan=lifespan, openapi_url=f"{API}/openapi.json",
                  docs_url=None, redoc_url=None)  # the interactive docs pages load from a CDN
    add_error_handlers(app)
    add_job_routes(app, state)
    return Guard(app, token, loopback, state.max_body)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.kind, e.message, **e.extra)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return error_response(e.status_code, kind, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, e: RequestValidationError) -> JSONResponse:
        problems = [{"message": err.get("msg", ""), "where": ".".join(str(x) for x in err.get("loc", ()))}
                    for err in e.errors()]
        return error_response(422, "invalid_request", "the request's parameters are invalid", problems=problems)

    @app.exception_handler(Exception)
    async def internal(_: Request, e: Exception) -> JSONResponse:
        traceback.print_exception(e, file=sys.stderr)
        return error_response(500, "internal", "internal server error (see the server's log)")


def job_view(state: ServerState, job: Job, full: bool = False) -> dict[str, Any]:
    view = job.summary() | {"links": {"self": f"{API}/jobs/{job.id}", "events": f"{API}/jobs/{job.id}/events",
                                      "outputs": f"{API}/jobs/{job.id}/outputs",
                                      "cancel": f"{API}/jobs/{job.id}/cancel"}}
    if full:
        view["request"] = job.request
        view["report"] = job.result
        view["outputs"] = state.store.outputs(job.id)
    return view


def find_job(state: ServerState, job_id: str) -> Job:
    job = state.store.job(job_id) if JOB_ID.match(job_id) else None
    if job is None:
        raise ApiError(404, "not_found", f"no job '{job_id[:64]}'")
    return job


async def wait_terminal(state: ServerState, job_id: str, seconds: float) -> Job:
    """The job once it is terminal or after `seconds`, whichever comes first."""
    deadline = time.monotonic() + min(max(seconds, 0.0), MAX_WAIT_S)
    with state.notifier.subscribe(job_id) as news:
        while True:
            news.clear()
            job = find_job(state, job_id)
            left = deadline - time.monotonic()
            if job.status in TERMINAL or left <= 0:
                return job
            await wait_for_news(news, left)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes even without a Content-Length (chunked uploads)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_request(body: bytes) -> dict[str, Any]:
    """{"workflow", "overrides", "set", "outputs", "seed"} from a JSON body (a bare workflow is accepted too)."""
    try:
        data = parse_json(decode_text(body, "request body"), "request body")
    except WorkflowError as e:
        raise ApiError(400, "malformed_body", "the request body is not valid JSON",
                       problems=problems_json(e.problems)) from None
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_body", f"expected a JSON object, got {type(data).__name__}")
    if "workflow" not in data and "nodes" in data:
        data = {"workflow": data}
    allowed = {"workflow", "overrides", "set", "outputs", "seed"}
    problems = [f"unknown field '{k}' (expected {', '.join(sorted(allowed))})" for k in data if k not in allowed]
    checks = [("workflow", dict, True), ("overrides", dict, False), ("set", list, False), ("outputs", list, False),
              ("seed", int, False)]
    for name, kind, required in checks:
        value = data.get(name)
        if value is None:
            if required:
                problems.append(f"field '{name}' is required (the workflow document)")
        elif not isinstance(value, kind) or isinstance(value, bool):
            problems.append(f"field '{name}' must be a JSON {'object' if kind is dict else kind.__name__}")
    for name in ("set", "outputs"):
        if isinstance(data.get(name), list) and not all(isinstance(x, str) for x in data[name]):
            problems.append(f"field '{name}' must be a list of strings")
    if problems:
        raise ApiError(422, "invalid_request", "; ".join(problems), problems=[{"message": p} for p in problems])
    return {k: v for k, v in data.items() if v is not None}


def add_job_routes(app: FastAPI, state: ServerState) -> None:
    store = state.store

    @app.get(f"{API}/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "uptime_s": round(time.time() - state.started, 3), "workers": len(state.workers),
                "threads": state.workers.threads}

    @app.post(f"{API}/jobs", status_code=201)
    async def create_job(request: Request, wait: float = Query(0.0, ge=0.0, le=MAX_WAIT_S)) -> JSONResponse:
        job_request = parse_request(await read_body(request, state.max_body))
        job_id = store.new_id()
        out_dir = state.workers.job_dir(job_id)
        try:
            await asyncio.to_thread(prepare, state.runtime, job_request, out_dir, state.model_roots)
        except WorkflowError as e:
            raise ApiError(422, "invalid_workflow", f"{len(e.problems)} problem(s) in the workflow",
                           problems=problems_json(e.problems)) from None
        job = await asyncio.to_thread(store.create_job, job_id, job_request)
        state.workers.wake()
        if wait > 0:
            job = await wait_terminal(state, job_id, wait)
        return JSONResponse(job_view(state, job, full=job.status in TERMINAL), status_code=201,
                            headers={"location": f"{API}/jobs/{job_id}"})

    @app.get(f"{API}/jobs")
    def list_jobs(limit: int = Query(50, ge=1, le=500), cursor: int | None = Query(None, ge=0),
                  status: str | None = Query(None, pattern="^(queued|running|succeeded|failed|cancelled)$")
                  ) -> dict[str, Any]:
        jobs = store.jobs(limit, cursor, status)
        return {"jobs": [job_view(state, j) for j in jobs], "counts": store.counts(),
                "next_cursor": jobs[-1].seq if len(jobs) == limit else None}

    @app.get(f"{API}/jobs/{{job_id}}")
    async def get_job(job_id: str, wait: float = Query(0.0, ge=0.0, le=MAX_WAIT_S)) -> dict[str, Any]:
        job = await wait_terminal(state, job_id, wait) if wait > 0 else find_job(state, job_id)
        return job_view(state, job, full=True)

    @app.post(f"{API}/jobs/{{job_id}}/cancel", status_code=202)
    async def cancel_job(job_id: str) -> dict[str, Any]:
        job = find_job(state, job_id)
        if job.status in TERMINAL:
            raise ApiError(409, "conflict", f"job '{job_id}' already {job.status}; only queued or running jobs "
                                            f"can be cancelled", job_status=job.status)
        status = await asyncio.to_thread(store.request_cancel, job_id)
        if status == "running":
            state.workers.cancel(job_id)
        state.notifier.notify(job_id)
        return job_view(state, find_job(state, job_id))

    add_stream_routes(app, state)
    add_output_routes(app, state)
    add_catalog_routes(app, state)


def add_stream_routes(app: FastAPI, state: ServerState) -> None:
    store = state.store

    @app.get(f"{API}/jobs/{{job_id}}/events")
    async def events(request: Request, job_id: str, after: int = Query(0, ge=0),
                     stream: bool = Query(True, description="false: the events so far as one JSON list")) -> Any:
        find_job(state, job_id)
        last = request.headers.get("last-event-id", "")
        start = int(last) if last.isdigit() else after
        if not stream:
            return {"events": [e.to_dict() for e in store.events(job_id, start, limit=100_000)]}
        return StreamingResponse(sse_stream(state, job_id, start), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    @app.websocket(f"{API}/jobs/{{job_id}}/ws")
    async def events_ws(ws: WebSocket, job_id: str) -> None:
        if not JOB_ID.match(job_id) or store.job(job_id) is None:
            await ws.close(code=4404, reason="no such job")
            return
        after = ws.query_params.get("after", "0")
        await ws.accept()
        await stream_to_websocket(ws, state, job_id, int(after) if after.isdigit() else 0)


def add_output_routes(app: FastAPI, state: ServerState) -> None:
    store = state.store

    @app.get(f"{API}/jobs/{{job_id}}/outputs")
    def list_outputs(job_id: str) -> dict[str, Any]:
        find_job(state, job_id)
        return {"outputs": [o | {"url": f"{API}/jobs/{job_id}/outputs/{o['name']}"} for o in store.outputs(job_id)]}

    @app.get(f"{API}/jobs/{{job_id}}/outputs/{{name:path}}")
    def get_output(job_id: str, name: str) -> FileResponse:
        find_job(state, job_id)
        entry = store.output(job_id, name)  # looked up by name: the URL never becomes a path
        if entry is None:
            raise ApiError(404, "not_found", f"job '{job_id}' has no output named '{name[:200]}'")
        path = state.workers.job_dir(job_id) / entry["name"]
        if not path.is_file():
            raise ApiError(410, "gone", f"output '{entry['name']}' was removed from the state dir")
        return FileResponse(path, media_type=entry["media_type"], filename=Path(entry["name"]).name)


def add_catalog_routes(app: FastAPI, state: ServerState) -> None:
    from ..cli import describe_spec

    specs = state.runtime.registry.specs

    @app.get(f"{API}/nodes")
    def nodes() -> dict[str, Any]:
        return {"nodes": {k: describe_spec(specs[k]) for k in sorted(specs)}}

    @app.get(f"{API}/nodes/{{kind}}")
    def node_kind(kind: str) -> dict[str, Any]:
        if kind not in specs:
            raise ApiError(404, "not_found", f"unknown node kind '{kind[:100]}'")
        return describe_spec(specs[kind])

    @app.get(f"{API}/schema")
    def schema() -> dict[str, Any]:
        return workflow_schema(specs)

    @app.get(f"{API}/workflows")
    def workflows() -> dict[str, Any]:
        folder = state.workflows_dir
        names = sorted(p.stem for p in folder.glob("*.json")) if folder is not None else []
        return {"workflows": names}

    @app.get(f"{API}/workflows/{{name}}")
    def workflow(name: str) -> Response:
        folder = state.workflows_dir
        if folder is None or not re.fullmatch(r"[A-Za-z0-9_\-]+", name) or not (folder / f"{name}.json").is_file():
            raise ApiError(404, "not_found", f"no shipped workflow '{name[:100]}'")
        return Response((folder / f"{name}.json").read_bytes(), media_type="application/json")

    if (STATIC / "index.html").is_file():
        @app.get("/", include_in_schema=False)
        def page() -> FileResponse:
            return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

        @app.get("/static/{name}", include_in_schema=False)
        def static(name: str) -> FileResponse:
            files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
            if name not in files:
                raise ApiError(404, "not_found", f"no static file '{name[:100]}'")
            return FileResponse(files[name], headers=PAGE_HEADERS)


async def event_batches(state: ServerState, job_id: str, after: int):
    """Batches of the job's events after seq `after`, live, until its terminal event; [] as a keep-alive."""
    with state.notifier.subscribe(job_id) as news:
        while True:
            news.clear()
            job = state.store.job(job_id)
            batch = state.store.events(job_id, after)
            if batch:
                after = batch[-1].seq
                yield [e.to_dict() for e in batch]
                continue
            if job is None or job.status in TERMINAL:
                return
            if not await wait_for_news(news, KEEPALIVE_S):
                yield []


async def stream_to_websocket(ws: WebSocket, state: ServerState, job_id: str, after: int) -> None:
    """Send the job's events as JSON text messages until its terminal event, then close; stop early when the
    client disconnects (listening for it lets the close handshake complete)."""

    async def send_all() -> None:
        async for batch in event_batches(state, job_id, after):
            for e in batch:
                await ws.send_text(json.dumps(e))

    async def until_disconnect() -> None:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass  # clients have nothing to say; their messages are ignored

    sending, listening = asyncio.create_task(send_all()), asyncio.create_task(until_disconnect())
    done, pending = await asyncio.wait({sending, listening}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if sending in done and sending.exception() is None:
        await ws.close()


async def sse_stream(state: ServerState, job_id: str, after: int):
    async for batch in event_batches(state, job_id, after):
        if not batch:
            yield ": keep-alive\n\n"
        for e in batch:
            yield f"id: {e['seq']}\nevent: {e['type']}\ndata: {json.dumps(e)}\n\n"
