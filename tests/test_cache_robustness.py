"""The disk cache under adverse conditions (issue 9): values only written when their port type can
decode them; sound-but-undecodable entries are misses, not corruption; an unusable cache directory is
a clear error up front; a failing write never fails the run; temporary files of killed writers are
swept and counted in the byte bound."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import helpers_nodes as H
from samplegraph import Runtime
from samplegraph.nodes.core.denoiser import Distribution
from samplegraph.nodes.core.sigmas import Sigmas
from samplegraph.nodes.models.gmm import ModelGMM
from samplegraph.nodes.schedules.flip import AscendingSigmas
from samplegraph.runtime import cache, values
from samplegraph.runtime.cache import CacheDirError, DiskCache
from samplegraph.runtime.events import CacheDiscarded, CacheUndecodable, CacheWriteFailed

TESTS = Path(__file__).parent
ROOT = TESTS.parent
DOC = {"nodes": {"t": {"kind": "test.tensor", "params": {"n": 3, "value": 1.0}},
                 "s": {"kind": "test.tensor_sum", "inputs": {"x": "t"}}}, "outputs": ["s", "t"]}
TENSOR_PORT = {"out": torch.Tensor}


def runtime(cache_dir: Path | None) -> Runtime:
    return Runtime(device="cpu", registry=H.REGISTRY, cache_dir=cache_dir)


def statuses(result) -> dict[str, str]:
    return {n.node: n.cache for n in result.report.nodes}


@pytest.fixture(autouse=True)
def _reset():
    H.reset()


# ---------------------------------------------------------------- what may be written


def test_encode_refuses_values_the_port_type_cannot_rebuild():
    gmm = ModelGMM().run()
    assert values.encode(gmm, Distribution) is None  # a GaussianMixture on a Distribution port
    assert values.encode(gmm, type(gmm)) is not None
    up = AscendingSigmas(torch.tensor([0.0, 1.0, 2.0]))
    assert values.encode(up, Sigmas) is None  # Sigmas.cache_decode would reject ascending levels
    tensors, meta = values.encode(up, AscendingSigmas)
    assert torch.equal(values.decode(AscendingSigmas, tensors, meta, torch.device("cpu")).values, up.values)
    assert values.encode((1, 2), tuple) is None  # would come back as a list
    assert values.encode([1, 2], list) == ({}, {"kind": "plain", "value": [1, 2]})


def test_sound_entry_of_another_version_is_a_miss_not_corruption(tmp_path):
    disk = DiskCache(tmp_path)
    key = "ab" * 32
    assert disk.put(key, {"out": torch.ones(4)}, TENSOR_PORT)
    told: dict[str, list] = {"corrupt": [], "undecodable": []}
    got = disk.get(key, {"other": torch.Tensor}, torch.device("cpu"),  # ports this version does not have
                   on_corrupt=lambda k, why: told["corrupt"].append(k),
                   on_undecodable=lambda k, why: told["undecodable"].append((k, why)))
    assert got is None and told["corrupt"] == [] and [k for k, _ in told["undecodable"]] == [key]
    assert "ports" in told["undecodable"][0][1] and disk.path(key).exists()  # left to be overwritten
    assert torch.equal(disk.get(key, TENSOR_PORT, torch.device("cpu")).outputs["out"], torch.ones(4))


def test_runtime_reports_an_undecodable_entry_as_its_own_event_and_recomputes(tmp_path, monkeypatch):
    runtime(tmp_path).run(DOC)
    monkeypatch.setattr("samplegraph.runtime.cache.FORMAT", cache.FORMAT + 1)  # as if a newer version reads these files
    events: list = []
    again = runtime(tmp_path).run(DOC, on_event=events.append)
    assert statuses(again) == {"t": "miss", "s": "miss"}
    assert [type(e) for e in events if isinstance(e, (CacheDiscarded, CacheUndecodable))] == [CacheUndecodable] * 2
    assert statuses(runtime(tmp_path).run(DOC)) == {"t": "disk", "s": "disk"}  # rewritten in the new format


# ---------------------------------------------------------------- unusable cache directories


def test_a_file_as_cache_dir_is_a_clear_error(tmp_path):
    f = tmp_path / "f"
    f.touch()
    for root in (f, f / "sub"):
        with pytest.raises(CacheDirError, match=rf"cache directory '{root}' is unusable: .*--cache-dir.*--no-cache"):
            runtime(root)


def test_an_unwritable_cache_dir_is_a_clear_error(tmp_path, monkeypatch):
    def refuse(self, data):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "write_bytes", refuse)  # root ignores chmod, so refuse the probe write itself
    with pytest.raises(CacheDirError, match="cannot write in it \\(Permission denied\\)"):
        DiskCache(tmp_path / "ro")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_cli_reports_an_unusable_cache_dir_without_traceback(tmp_path, how):
    f = tmp_path / "f"
    f.touch()
    args = ["--cache-dir", str(f)] if how == "flag" else []
    env = {**os.environ, "SAMPLEGRAPH_CACHE_DIR": str(f)}
    out = subprocess.run([sys.executable, "-m", "samplegraph.runtime.cli", "run", "workflows/quickstart.json",
                          "--out", str(tmp_path / "out"), "--threads", "1", *args],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: cache directory '{f}' is unusable: it exists and is not a directory")
    assert "Traceback" not in out.stderr and "corrupt" not in out.stderr


def test_a_failing_write_warns_once_and_the_run_goes_on(tmp_path, monkeypatch):
    rt = runtime(tmp_path)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "write_atomically", full)
    events: list = []
    result = rt.run(DOC, on_event=events.append)
    failed = [e for e in events if isinstance(e, CacheWriteFailed)]
    assert result["s"] == runtime(None).run(DOC)["s"] and len(failed) == 1 and "No space left on device" in failed[0].reason
    assert statuses(rt.run(DOC)) == {"t": "memory", "s": "memory"}
    monkeypatch.undo()
    rt.memory.clear()
    rt.run(DOC)  # space again: written, and a later failure would be told again
    assert statuses(runtime(tmp_path).run(DOC)) == {"t": "disk", "s": "disk"}


# ---------------------------------------------------------------- temporary files


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def temp_file(root: Path, pid: int, age_s: float = 0.0, size: int = 100) -> Path:
    p = root / "ab" / f".{'ab' * 32}.safetensors.{pid}.{os.urandom(16).hex()}.tmp"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x" * size)
    if age_s:
        old = time.time() - age_s
        os.utime(p, (old, old))
    return p


def test_opening_sweeps_temp_files_of_dead_or_long_gone_writers(tmp_path):
    dead = temp_file(tmp_path, dead_pid())
    old = temp_file(tmp_path, os.getpid(), age_s=2 * 3600)
    live = temp_file(tmp_path, os.getpid(), size=300)  # a put in flight in a live process
    disk = DiskCache(tmp_path)
    assert (dead.exists(), old.exists(), live.exists()) == (False, False, True)
    assert disk.total_bytes() == 300  # temporary files count against the bound


def test_eviction_counts_temp_files_against_the_bound(tmp_path):
    temp_file(tmp_path, os.getpid(), size=2000)
    disk = DiskCache(tmp_path, max_bytes=2500)
    disk.put("cd" * 32, {"out": torch.zeros(256)}, TENSOR_PORT)  # ~1.3 kB: 3.3 kB in all > 2.5 kB
    assert not disk.path("cd" * 32).exists() and disk.total_bytes() <= 2500


KILLED_PUT = """
import os, signal, sys, torch
from samplegraph.runtime.cache import DiskCache
def die(src, dst):
    os.kill(os.getpid(), signal.SIGKILL)  # killed between writing the temporary file and renaming it
os.replace = die
DiskCache(sys.argv[1]).put("ef" * 32, {"out": torch.zeros(8)}, {"out": torch.Tensor})
"""


def test_a_writer_killed_mid_put_leaves_a_temp_file_that_the_next_open_sweeps(tmp_path):
    out = subprocess.run([sys.executable, "-c", KILLED_PUT, str(tmp_path)], capture_output=True, timeout=120)
    assert out.returncode == -signal.SIGKILL
    left = list(tmp_path.glob("*/.*.tmp"))
    assert len(left) == 1 and not DiskCache(tmp_path).temp_files() and not left[0].exists()
