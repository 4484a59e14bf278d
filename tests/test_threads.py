"""The threads rule: one torch thread per core that other processes leave free, at least one."""
import pytest
import torch

from samplegraph.runtime import threads
from samplegraph.runtime.threads import apply_threads, auto_threads, per_worker_threads


@pytest.mark.parametrize("cores,busy,expected", [(2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 2.0, 1), (2, 7.0, 1),
                                                 (16, 3.2, 13), (1, 0.0, 1)])
def test_auto_gives_the_free_cores(cores, busy, expected):
    assert auto_threads(cores, busy) == expected


def test_apply_sets_torch_and_reads_the_load(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(threads, "busy_cores", lambda: 0.0)
        monkeypatch.setattr(threads, "available_cores", lambda: 2)
        assert apply_threads("auto") == 2 and torch.get_num_threads() == 2
        monkeypatch.setattr(threads, "busy_cores", lambda: 1.7)
        assert apply_threads("auto") == 1 and torch.get_num_threads() == 1
        assert apply_threads(3) == 3 and torch.get_num_threads() == 3
        with pytest.raises(ValueError, match="at least 1"):
            apply_threads(0)
    finally:
        torch.set_num_threads(before)


def test_busy_cores_is_a_non_negative_reading():
    assert threads.busy_cores() >= 0.0


@pytest.mark.parametrize("asked,free,workers,expected", [("auto", 8, 1, 8), ("auto", 8, 3, 2), ("auto", 2, 4, 1),
                                                           (3, 8, 4, 3), (1, 8, 1, 1)])
def test_serve_threads_per_worker(monkeypatch, asked, free, workers, expected):
    """samplegraph serve --threads: a number is each worker's; 'auto' shares the free cores among the workers."""
    monkeypatch.setattr(threads, "auto_threads", lambda: free)
    assert per_worker_threads(asked, workers) == expected


def test_serve_threads_refuses_zero():
    with pytest.raises(ValueError, match="at least 1"):
        per_worker_threads(0, 2)


def test_an_in_process_run_leaves_the_callers_thread_count(tmp_path):
    """cli.main(["run", ..., "--threads", n]) embedded in a process restores torch's count: a leaked count made later
    float results in the same process differ (a batched CFG pass rounds differently on 2 threads than on 1)."""
    from pathlib import Path

    from samplegraph.runtime.cli import main
    quickstart = Path(__file__).resolve().parents[1] / "workflows" / "quickstart.json"
    before = torch.get_num_threads()
    asked = before + 1
    try:
        code = main(["run", str(quickstart), "--no-cache", "--quiet", "--out", str(tmp_path), "--set", "noise.batch=8",
                     "--threads", str(asked)])
        assert code == 0 and torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_threads_applied_restores_on_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"):
        with threads.threads_applied(before + 2) as n:
            assert n == before + 2 and torch.get_num_threads() == before + 2
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
