"""The server's persistent state: one SQLite file in WAL mode with the tables jobs, events and outputs.

One process (the server) writes, through one connection behind a lock, every write in `BEGIN IMMEDIATE` with
a busy timeout (a deferred read-then-write transaction can fail with "database is locked" despite the
timeout; REFERENCE.md "Serving and scale-out"). Readers use their own per-thread connections: WAL lets them
read while the writer writes."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..report import json_safe

BUSY_TIMEOUT_MS = 10_000
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
STATUSES = frozenset({"queued", "running"}) | TERMINAL

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- submission order: the queue and the list's cursor
    id TEXT NOT NULL UNIQUE,                 -- server-chosen (uuid4 hex)
    status TEXT NOT NULL,
    request TEXT NOT NULL,                   -- {"workflow", "overrides", "outputs", "seed"} as submitted
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,     -- times a worker took it (a restart re-queues a running job)
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,                              -- JSON: {"type", "message", "problems"?}
    result TEXT                              -- JSON: the run report
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,                    -- 1, 2, ... per job: the SSE id, for Last-Event-ID replay
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    time REAL NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outputs (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,                      -- the file's path inside the job's folder, '/'-separated
    size INTEGER NOT NULL,
    media_type TEXT NOT NULL,
    PRIMARY KEY (job_id, name)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Job:
    id: str
    seq: int
    status: str
    request: dict[str, Any]
    created: float
    started: float | None
    finished: float | None
    attempts: int
    cancel_requested: bool
    error: dict[str, Any] | None
    result: dict[str, Any] | None

    def summary(self) -> dict[str, Any]:
        """The job as the API shows it (without the workflow itself)."""
        return {"id": self.id, "status": self.status, "created": self.created, "started": self.started,
                "finished": self.finished, "attempts": self.attempts, "cancel_requested": self.cancel_requested,
                "error": self.error}


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    type: str
    data: dict[str, Any]
    time: float

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "time": self.time, **self.data}


JOB_COLUMNS = "id, seq, status, request, created, started, finished, attempts, cancel_requested, error, result"


def job_of(row: tuple) -> Job:
    loads = lambda s: json.loads(s) if s is not None else None
    return Job(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], row[7], bool(row[8]),
               loads(row[9]), loads(row[10]))


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class Store:
    """Jobs, events and outputs in `<state dir>/samplegraph.db`; thread-safe."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._write_lock = threading.Lock()
        self._writer = connect(self.path)
        mode = self._writer.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise OSError(f"SQLite refused WAL mode for '{self.path}' (got {mode}); use a local disk for --state-dir")
        with self._write_lock:
            self._writer.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
        self._readers = threading.local()

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: the write lock is taken up front), committed on success."""
        with self._write_lock:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def reader(self) -> sqlite3.Connection:
        conn = getattr(self._readers, "conn", None)
        if conn is None:
            conn = self._readers.conn = connect(self.path)
        return conn

    # --- jobs ---------------------------------------------------------------------------------------

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def create_job(self, job_id: str, request: dict[str, Any]) -> Job:
        now = time.time()
        with self.write() as db:
            db.execute("INSERT INTO jobs (id, status, request, created) VALUES (?, 'queued', ?, ?)",
                       (job_id, json.dumps(request), now))
            append_event(db, job_id, "queued", {}, now)
        job = self.job(job_id)
        assert job is not None
        return job

    def job(self, job_id: str) -> Job | None:
        row = self.reader().execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return job_of(row) if row else None

    def jobs(self, limit: int, before: int | None = None, status: str | None = None) -> list[Job]:
        """Newest first; `before` is the seq cursor of the previous page."""
        where, args = ["1"], []
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        rows = self.reader().execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
                                     f"ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [job_of(r) for r in rows]

    def claim_next(self) -> Job | None:
        """Take the oldest queued job (status -> running), or None when the queue is empty."""
        with self.write() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            now = time.time()
            db.execute("UPDATE jobs SET status = 'running', started = ?, attempts = attempts + 1 WHERE id = ?",
                       (now, row[0]))
            append_event(db, row[0], "running", {}, now)
        return self.job(row[0])

    def finish(self, job_id: str, status: str, result: dict[str, Any] | None = None,
               error: dict[str, Any] | None = None, outputs: list[tuple[str, int, str]] = ()) -> bool:
        """Mark a queued or running job terminal, record its outputs and the final event; False if it was
        already terminal (e.g. cancelled while queued)."""
        assert status in TERMINAL
        now = time.time()
        with self.write() as db:
            changed = db.execute("UPDATE jobs SET status = ?, finished = ?, result = ?, error = ? WHERE id = ? "
                                 "AND status IN ('queued', 'running')",
                                 (status, now, dump(result), dump(error), job_id)).rowcount
            if not changed:
                return False
            db.executemany("INSERT OR REPLACE INTO outputs (job_id, name, size, media_type) VALUES (?, ?, ?, ?)",
                           [(job_id, *o) for o in outputs])
            append_event(db, job_id, status, {"error": error} if error else {}, now)
        return True

    def request_cancel(self, job_id: str) -> str | None:
        """Flag a job for cancellation: a queued one is cancelled at once. Its status after, None if unknown."""
        with self.write() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row[0] == "queued":
                now = time.time()
                db.execute("UPDATE jobs SET status = 'cancelled', finished = ?, cancel_requested = 1 WHERE id = ?",
                           (now, job_id))
                append_event(db, job_id, "cancelled", {"while": "queued"}, now)
                return "cancelled"
            if row[0] == "running":
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return row[0]

    def requeue_interrupted(self) -> list[str]:
        """At start: jobs left 'running' by a killed server go back to the queue (attempts keeps the count)."""
        with self.write() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE status = 'running' ORDER BY seq")]
            now = time.time()
            for job_id in ids:
                # a cancel asked of a running job that the kill interrupted is honoured now
                row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
                status = "cancelled" if row[0] else "queued"
                db.execute("UPDATE jobs SET status = ?, started = NULL, finished = ? WHERE id = ?",
                           (status, now if status == "cancelled" else None, job_id))
                append_event(db, job_id, "requeued" if status == "queued" else "cancelled",
                             {"reason": "the server stopped while the job ran"}, now)
        return ids

    # --- events and outputs -------------------------------------------------------------------------

    def add_event(self, job_id: str, type_: str, data: dict[str, Any]) -> int:
        with self.write() as db:
            return append_event(db, job_id, type_, data, time.time())

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[StoredEvent]:
        rows = self.reader().execute("SELECT seq, type, data, time FROM events WHERE job_id = ? AND seq > ? "
                                     "ORDER BY seq LIMIT ?", (job_id, after, limit)).fetchall()
        return [StoredEvent(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def outputs(self, job_id: str) -> list[dict[str, Any]]:
        rows = self.reader().execute("SELECT name, size, media_type FROM outputs WHERE job_id = ? ORDER BY name",
                                     (job_id,)).fetchall()
        return [{"name": r[0], "size": r[1], "media_type": r[2]} for r in rows]

    def output(self, job_id: str, name: str) -> dict[str, Any] | None:
        row = self.reader().execute("SELECT name, size, media_type FROM outputs WHERE job_id = ? AND name = ?",
                                    (job_id, name)).fetchone()
        return {"name": row[0], "size": row[1], "media_type": row[2]} if row else None

    def counts(self) -> dict[str, int]:
        rows = self.reader().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {s: 0 for s in sorted(STATUSES)} | dict(rows)


def append_event(db: sqlite3.Connection, job_id: str, type_: str, data: dict[str, Any], now: float) -> int:
    """The job's next event (seq = last + 1), inside the caller's write transaction."""
    seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (job_id,)).fetchone()[0]
    db.execute("INSERT INTO events (job_id, seq, type, data, time) VALUES (?, ?, ?, ?, ?)",
               (job_id, seq, type_, dump(data), now))
    return seq


def dump(value: Any) -> str | None:
    return json.dumps(json_safe(value), allow_nan=False, default=str) if value is not None else None
