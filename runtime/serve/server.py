"""`samplegraph serve`: open the state dir (lock, token, store), re-queue what a killed server left running,
and run the app on uvicorn."""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from ...graph.errors import SamplegraphError
from ..api import Runtime
from ..threads import Threads, per_worker_threads
from .jobs import Notifier, Workers
from .security import is_loopback, load_or_create_token
from .store import Store

DEFAULT_MAX_BODY = 8 << 20  # 8 MiB: a workflow is kilobytes; the shipped ones are under 10 KB


class StateDirError(SamplegraphError):
    """The state dir cannot be used (not writable, or another server holds it)."""


class ListenError(SamplegraphError):
    """The server cannot listen on the address and port asked for."""


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8188
    state_dir: Path = Path("samplegraph-state")
    workers: int = 1
    model_roots: Sequence[Path] = ()
    cache_dir: Path | None = None  # default: <state dir>/cache
    device: str = "auto"
    vram_budget: int | None = None  # bytes of device memory for model weights (runtime/memory.py)
    max_body: int = DEFAULT_MAX_BODY
    threads: Threads = "auto"  # torch intra-op threads per worker; 'auto': the free cores shared among the workers


def lock_state_dir(state_dir: Path) -> IO[str]:
    """An exclusive lock on `<state dir>/server.lock` held for the process's life: one writer per state dir."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(state_dir / "server.lock", "a+")
    except OSError as e:
        raise StateDirError(f"state dir '{state_dir}' is unusable: {e.strerror or e}; choose another "
                            f"--state-dir") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StateDirError(f"another samplegraph server is using the state dir '{state_dir}'; stop it or choose "
                            f"another --state-dir") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def check_listen(host: str, port: int) -> None:
    """Bind (host, port) as uvicorn will (its address family, SO_REUSEADDR) and let go, so that a busy port or
    an address this machine lacks is a clear error before the state dir, token or queue are touched."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except (socket.gaierror, UnicodeError) as e:  # an unknown name; a malformed one (empty label) fails to encode
            reason = e.strerror if isinstance(e, socket.gaierror) else "not a valid host name"
            raise ListenError(f"--host {host!r} is not an address of this machine ({reason}); give one it has, "
                              f"e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
        except OSError as e:
            fix = {errno.EADDRINUSE: "choose another --port, or stop the process listening there",
                   errno.EACCES: "ports below 1024 need privileges: choose a --port above 1023",
                   errno.EADDRNOTAVAIL: "that address is not one of this machine's: choose another --host"}
            raise ListenError(f"cannot listen on {url_host(host)}:{port}: {e.strerror or e}; "
                              f"{fix.get(e.errno, 'choose another --host or --port')}") from None


def build(options: ServeOptions, out: IO[str] = sys.stdout) -> tuple[Any, IO[str]]:
    """The guarded ASGI app and the lock handle (kept open while serving)."""
    from .app import ServerState, create_app

    state_dir = options.state_dir.expanduser().resolve()
    lock = lock_state_dir(state_dir)
    loopback = is_loopback(options.host)
    token = None
    if not loopback:
        token, created = load_or_create_token(state_dir)
        if created:
            print(f"samplegraph serve: new API token (saved in {state_dir / 'token'}, mode 0600): {token}", file=out)
        else:
            print(f"samplegraph serve: API token in {state_dir / 'token'}", file=out)
    store = Store(state_dir / "samplegraph.db")
    requeued = store.requeue_interrupted()
    if requeued:
        print(f"samplegraph serve: re-queued {len(requeued)} job(s) interrupted by the last stop", file=out)
    runtime = Runtime(device=options.device, cache_dir=options.cache_dir or state_dir / "cache",
                      vram_budget=options.vram_budget)
    notifier = Notifier()
    roots = [Path(r).expanduser().resolve() for r in options.model_roots]
    workers = Workers(store, runtime, notifier, state_dir / "jobs", roots, options.workers,
                      per_worker_threads(options.threads, options.workers))
    shipped = Path(__file__).resolve().parents[2] / "workflows"
    state = ServerState(store, runtime, workers, notifier, roots, options.max_body,
                        workflows_dir=shipped if shipped.is_dir() else None)
    return create_app(state, token, loopback), lock


def serve(options: ServeOptions) -> int:
    import uvicorn

    options = replace(options, threads=per_worker_threads(options.threads, options.workers))  # 'auto' read once
    check_listen(options.host, options.port)
    app, lock = build(options)
    config = uvicorn.Config(app, host=options.host, port=options.port, log_level="warning",
                            ws="websockets-sansio", lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    print(f"samplegraph serve: http://{url_host(options.host)}:{options.port}/ (state dir "
          f"{options.state_dir}, {options.workers} worker(s), {options.threads} torch thread(s) each)", flush=True)
    try:
        server.run()
    finally:
        lock.close()
    return 0 if server.started else 1


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
