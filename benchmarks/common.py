"""Shared helpers for benchmark scripts: timing and markdown tables."""
from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any


def timings(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall times in seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Minimum wall time over `repeat` calls (the least disturbed run)."""
    return min(timings(fn, repeat))


def median_of(fn: Callable[[], object], repeat: int = 5) -> float:
    return statistics.median(timings(fn, repeat))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table."""
    def cell(v: object) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def concurrently(n: int, one: Callable[[int, threading.Barrier], dict[str, Any]]) -> list[dict[str, Any]]:
    """`one(i, barrier)` for i < n, each on its own thread. A client passes the barrier just before it submits,
    so that all n submit at once (after any per-client set-up); one that raises gets {"status": "client error:
    ..."} as its result and breaks the barrier for the others."""
    results: list[dict[str, Any]] = [{} for _ in range(n)]
    barrier = threading.Barrier(n, timeout=300)

    def run(i: int) -> None:
        try:
            results[i] = one(i, barrier)
        except Exception as e:  # noqa: BLE001 - the caller checks every status
            barrier.abort()  # release the others: the run is void
            results[i] = {"status": f"client error: {e!r}"}

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
