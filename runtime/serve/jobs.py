"""Job execution: submit-time preparation (validation and confinement), worker threads that run queued jobs on
one shared Runtime, and the notifier that wakes event streams and waiters when a job's events change."""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import mimetypes
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...graph.errors import Problem, RunCancelled, SamplegraphError, WorkflowError
from ...graph.validate import execution_order
from ...graph.workflow import Workflow, parse_override
from ..api import CancelToken, Runtime, resolve_wanted
from ..confine import check_confined
from ...nodes.io.image_grid import to_picture
from ..events import Event, RunFinished, StepPreview, StepProgress
from .store import Job, Store


@dataclass(frozen=True)
class Prepared:
    workflow: Workflow
    outputs: list[str]


def problems_json(problems: Sequence[Problem]) -> list[dict[str, Any]]:
    return [{**dataclasses.asdict(p), "text": str(p)} for p in problems]


def error_json(err: BaseException) -> dict[str, Any]:
    """What a client sees of a failure: the type and message, located problems when there are; never a traceback."""
    out: dict[str, Any] = {"type": type(err).__name__, "message": str(err)}
    if isinstance(err, WorkflowError):
        out["problems"] = problems_json(err.problems)
    return out


def prepare(runtime: Runtime, request: dict[str, Any], out_dir: Path, model_roots: Sequence[Path]) -> Prepared:
    """The workflow a request runs, validated as `samplegraph validate` does, with its files confined:
    a WorkflowError carries every problem found."""
    wf, _ = runtime.load(request["workflow"])
    overrides = dict(parse_override(s) for s in request.get("set", []))
    overrides.update(request.get("overrides") or {})
    if overrides:
        wf = wf.with_overrides(overrides)
    if request.get("seed") is not None:
        wf = Workflow.from_dict({**wf.model_dump(mode="json"), "seed": request["seed"]})
    graph = runtime.validate(wf)
    names = request.get("outputs") or list(wf.outputs)
    order = execution_order(graph, names)
    resolve_wanted(graph, names)  # a bad port in `outputs` is a problem of the request, found now
    check_confined(graph, order, out_dir, model_roots)
    return Prepared(wf, names)


class Notifier:
    """Wakes asyncio waiters (event streams, ?wait=) from worker threads when a job has news.

    A waiter subscribes first, then clears its event, reads the store, and waits only if it found nothing
    new: a notification sent after the read sets the event, so no news is ever missed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}

    def notify(self, job_id: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(job_id, ()))
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop has closed (server stopping)
                pass

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(entry)
        try:
            yield entry[1]
        finally:
            with self._lock:
                group = self._waiters.get(job_id)
                if group is not None:
                    group.discard(entry)
                    if not group:
                        del self._waiters[job_id]


async def wait_for_news(event: asyncio.Event, timeout: float) -> bool:
    """Whether news came within `timeout` seconds."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
        return True
    except asyncio.TimeoutError:
        return False


def snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


class EventRecorder:
    """A run's on_event: persists each event as (type, data) and notifies; sampler steps are thinned to
    whole-percent changes (and the first and last step), so a 10k-step run writes at most ~100 rows per node."""

    def __init__(self, store: Store, notifier: Notifier, job_id: str):
        self.store, self.notifier, self.job_id = store, notifier, job_id
        self._last_pct: dict[str, int] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunFinished):
            return  # the job's terminal event carries the report
        if isinstance(event, StepProgress) and not self.keep(event):
            return
        data = preview_json(event) if isinstance(event, StepPreview) else dataclasses.asdict(event)
        self.store.add_event(self.job_id, snake(type(event).__name__), data)
        self.notifier.notify(self.job_id)

    def keep(self, e: StepProgress) -> bool:
        pct = (100 * e.step) // max(e.total, 1)
        if e.step in (1, e.total) or pct != self._last_pct.get(e.node):
            self._last_pct[e.node] = pct
            return True
        return False


def preview_json(event: StepPreview) -> dict[str, Any]:
    """A preview event as stored and streamed: its picture as a PNG data URL (the page shows it as it comes)."""
    picture = to_picture(event.image.detach().to("cpu", dtype=torch.float64).permute(1, 2, 0), 0.0, 1.0, 1)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    png = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"node": event.node, "step": event.step, "total": event.total, "png": png}


def output_files(out_dir: Path) -> list[tuple[str, int, str]]:
    """(name, size, media type) of every finished file in a job's folder (temporary files skipped)."""
    found = []
    for path in sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir)
        if path.is_file() and not path.is_symlink() and not any(part.startswith(".") for part in rel.parts):
            media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            found.append((rel.as_posix(), path.stat().st_size, media))
    return found


class Workers:
    """N threads taking queued jobs in submission order; one job's failure never stops the queue."""

    def __init__(self, store: Store, runtime: Runtime, notifier: Notifier, jobs_dir: Path,
                 model_roots: Sequence[Path], count: int, threads: int | None = None):
        self.store, self.runtime, self.notifier = store, runtime, notifier
        self.threads = threads  # torch intra-op threads each worker runs its jobs with (None: leave torch's)
        self.jobs_dir, self.model_roots = jobs_dir, list(model_roots)
        self._wakeup = threading.Condition()
        self._stopping = False
        self._tokens: dict[str, CancelToken] = {}
        self._tokens_lock = threading.Lock()
        self._threads = [threading.Thread(target=self.loop, name=f"samplegraph-worker-{i}", daemon=True)
                         for i in range(count)]

    def __len__(self) -> int:
        """The number of worker threads (jobs run at once)."""
        return len(self._threads)

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs and cancel the running ones; they stay 'running' in the store, so the next start
        re-queues them exactly as after a crash."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        with self._tokens_lock:
            for token in self._tokens.values():
                token.cancel()
        for t in self._threads:
            t.join(timeout)

    def wake(self) -> None:
        with self._wakeup:
            self._wakeup.notify()

    def cancel(self, job_id: str) -> None:
        with self._tokens_lock:
            token = self._tokens.get(job_id)
        if token is not None:
            token.cancel()

    def loop(self) -> None:
        if self.threads is not None:  # in this thread: MKL's count is per thread, OpenMP's read at a thread's first op
            torch.set_num_threads(self.threads)
        while True:
            with self._wakeup:
                if self._stopping:
                    return
            job = self.store.claim_next()
            if job is None:
                with self._wakeup:
                    if not self._stopping:
                        self._wakeup.wait(1.0)
                continue
            self.notifier.notify(job.id)
            try:
                self.run(job)
            except Exception:  # a bug of ours: the job fails, the worker lives on
                traceback.print_exc(file=sys.stderr)
                self.store.finish(job.id, "failed", error={"type": "InternalError", "message": "internal error"})
            self.notifier.notify(job.id)

    def run(self, job: Job) -> None:
        token = CancelToken()
        with self._tokens_lock:
            self._tokens[job.id] = token
        try:
            current = self.store.job(job.id)
            if current is not None and current.cancel_requested:  # asked between the claim and now
                token.cancel()
            self.execute(job, token)
        finally:
            with self._tokens_lock:
                self._tokens.pop(job.id, None)

    def execute(self, job: Job, token: CancelToken) -> None:
        from ..cli import save_tensor_output

        out_dir = self.job_dir(job.id)
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            prepared = prepare(self.runtime, job.request, out_dir, self.model_roots)
            result = self.runtime.run(prepared.workflow, outputs=prepared.outputs,
                                      on_event=EventRecorder(self.store, self.notifier, job.id),
                                      cancel=token, out_dir=out_dir)
            for name, value in result.outputs.items():
                save_tensor_output(name, value, out_dir)
        except RunCancelled as e:
            if self._stopping and not (self.store.job(job.id) or job).cancel_requested:
                return  # shutting down: left 'running', re-queued at the next start
            self.store.finish(job.id, "cancelled", error=error_json(e), outputs=output_files(out_dir))
            return
        except SamplegraphError as e:
            self.store.finish(job.id, "failed", error=error_json(e), outputs=output_files(out_dir))
            return
        self.store.finish(job.id, "succeeded", result=result.report.to_dict(), outputs=output_files(out_dir))
