"""How many CPU threads torch gets: a number, or "auto" (the CLI's default).

Why a rule: torch's default (one thread per core) is the fastest on an idle machine for large
tensors, but on a machine whose cores are busy with other processes its threads wait for each
other at every operation: a 65,536-sample quickstart took 22.7 s instead of 6.6 s with one
thread on a loaded 2-core machine, and a 64-digit CFG run 10.9 s instead of 0.2 s. `auto`
gives torch the cores that other processes leave free, read when the run starts
(benchmarks/threads.py measures the rule against fixed choices)."""
from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch

Threads = int | Literal["auto"]


def busy_cores(samples: int = 5, interval_s: float = 0.004) -> float:
    """Cores other processes keep busy now: the median number of runnable tasks in /proc/loadavg over a
    few readings, minus this process. The load average itself lags by a minute (a machine that just
    went quiet still reads busy), so it is only the fallback where /proc is missing."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return max(os.getloadavg()[0] - 1.0, 0.0)
        if i + 1 < samples:
            time.sleep(interval_s)
    return max(float(statistics.median(counts)), 0.0)


def auto_threads(cores: int | None = None, busy: float | None = None) -> int:
    """One thread per core that other processes leave free (at least 1)."""
    cores = cores if cores is not None else available_cores()
    busy = busy if busy is not None else busy_cores()
    return max(1, min(cores, math.floor(cores - busy + 0.5)))


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def per_worker_threads(threads: Threads, workers: int) -> int:
    """Torch threads for each of `workers` jobs running at once (samplegraph serve): `threads` as given, or for
    'auto' the free cores shared among the workers (at least 1 each)."""
    n = max(1, auto_threads() // max(1, workers)) if threads == "auto" else int(threads)
    if n < 1:
        raise ValueError(f"threads must be at least 1 or 'auto', got {threads}")
    return n


def apply_threads(threads: Threads) -> int:
    """Set torch's intra-op threads to `threads` (or the `auto` rule); returns the number set."""
    n = auto_threads() if threads == "auto" else int(threads)
    if n < 1:
        raise ValueError(f"threads must be at least 1 or 'auto', got {threads}")
    torch.set_num_threads(n)
    return n


@contextmanager
def threads_applied(threads: Threads) -> Iterator[int]:
    """apply_threads for the length of a block, then torch's count as it was: a command run in-process (embedded, or
    in a test) must not leave the caller's torch on another thread count (float sums then round differently)."""
    before = torch.get_num_threads()
    try:
        yield apply_threads(threads)
    finally:
        torch.set_num_threads(before)
