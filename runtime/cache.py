"""Output caches keyed by Merkle keys: an in-memory LRU bounded in bytes, and an on-disk
store shared by processes.

Disk entry: one safetensors file per key, `<root>/<key[:2]>/<key>.safetensors`; its header
metadata holds the msgpack (base64) description of every output port and a SHA-256 of each
tensor's bytes. Writes go to a temporary file and are renamed into place (atomic on POSIX),
so readers see a whole entry or none; temporary files left by killed writers are swept on open.
Reads verify the digests; a corrupt or truncated entry is deleted and reported as a miss, so it
is recomputed, never returned; a sound entry this version cannot decode is a plain miss. Only
values the port's declared type decodes are written. The store is bounded in bytes (temporary
files included): when over, least-recently-used entries (mtime, refreshed on read) go."""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import struct
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import torch
from safetensors.torch import load as st_load

from ..graph.errors import SamplegraphError
from ..nodes.core.tensorfile import safetensors_bytes
from . import values
from .preflight import writable_dir_problem

FORMAT = 2  # 2: the counter-based noise was redefined (issue 9), so format-1 entries of seeded nodes hold other draws
TMP_SUFFIX = ".tmp"
STALE_TMP_S = 3600.0  # a put writes one file; a temporary file this old belongs to no live put
Outputs = dict[str, Any]


@dataclass(frozen=True)
class Entry:
    """A node's cached result: its outputs by port and the metrics it recorded (JSON-plain),
    so reports show the metrics on cache hits too."""

    outputs: Outputs
    metrics: dict[str, Any] = field(default_factory=dict)


class MemoryCache:
    """Thread-safe LRU of node outputs bounded by total bytes of the tensors it holds."""

    def __init__(self, max_bytes: int = 2 << 30):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, tuple[Entry, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._computing: dict[str, threading.Event] = {}  # key -> set when the thread computing it is done

    def claim(self, key: str) -> threading.Event | None:
        """None: the caller now computes `key` (and must `release` it); else the Event another thread sets when
        it is done with `key` (its result is then here, unless it failed or was too large to keep)."""
        with self._lock:
            if (busy := self._computing.get(key)) is not None:
                return busy
            self._computing[key] = threading.Event()
            return None

    def release(self, key: str) -> None:
        """The claimed computation of `key` is over (stored, or failed): wake the threads waiting for it."""
        with self._lock:
            done = self._computing.pop(key, None)
        if done is not None:
            done.set()

    def get(self, key: str) -> Entry | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: str, outputs: Outputs, metrics: dict[str, Any] | None = None) -> None:
        size = sum(values.nbytes(v) for v in outputs.values())
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (Entry(outputs, dict(metrics or {})), size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, freed) = self._items.popitem(last=False)
                self._bytes -= freed

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


class CacheDirError(SamplegraphError):
    """The disk cache's directory cannot be created or written."""

    def __init__(self, root: Path, reason: str):
        self.root = root
        super().__init__(f"cache directory '{root}' is unusable: {reason}; choose a writable directory with "
                         f"--cache-dir or SAMPLEGRAPH_CACHE_DIR (Runtime(cache_dir=...)), or run without the "
                         f"disk cache (--no-cache, Runtime(cache_dir=None))")


class CacheWriteError(SamplegraphError):
    """An entry could not be written (disk full, permissions changed); the run goes on without it."""


class DiskCache:
    """Process-shared on-disk store of encodable node outputs, bounded in bytes.

    Opening checks that the root is a writable directory (CacheDirError otherwise) and sweeps the
    temporary files of writers that died mid-put."""

    def __init__(self, root: str | Path, max_bytes: int = 10 << 30):
        self.root = Path(root).expanduser()
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._bytes: int | None = None  # running estimate; rescanned when it passes the bound
        self._write_failing = False  # the last put failed: report the next failure only after a success
        check_root(self.root)
        self.sweep_temp()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str, port_types: dict[str, type], device: torch.device,
            on_corrupt: Callable[[str, str], None] | None = None,
            on_undecodable: Callable[[str, str], None] | None = None) -> Entry | None:
        """The outputs stored under `key`, or None.

        A corrupt entry (bad digest, truncated, malformed) is deleted and `on_corrupt(key, why)`
        told; a sound entry this code cannot rebuild (another version's format or port types) is a
        miss told to `on_undecodable(key, why)` and left to be overwritten."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except OSError:  # absent, or unreadable: not evidence of corruption
            return None
        try:
            header, tensors = self._verify(data, key)
        except Exception as e:  # any malformation means: discard and recompute
            self._discard(path, f"{type(e).__name__}: {e}", on_corrupt)
            return None
        try:
            entry = self._decode(header, tensors, port_types, device)
        except Exception as e:  # a sound entry we cannot rebuild: a miss, not corruption
            if on_undecodable is not None:
                on_undecodable(key, f"{type(e).__name__}: {e}")
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return entry

    def put(self, key: str, outputs: Outputs, port_types: dict[str, type],
            metrics: dict[str, Any] | None = None) -> bool:
        """Store when every output (as its declared port type) and the metrics are encodable;
        returns whether it was stored. A failed write raises CacheWriteError once, then fails
        quietly until a write succeeds again."""
        data = self.encode_entry(key, outputs, port_types, metrics)
        if data is None:
            return False
        try:
            write_atomically(self.path(key), data)
        except OSError as e:
            with self._lock:
                first, self._write_failing = not self._write_failing, True
            if first:
                raise CacheWriteError(f"could not write cache entry '{self.path(key)}': {e.strerror or e}; "
                                      f"continuing without storing results on disk") from e
            return False
        with self._lock:
            self._write_failing = False
        self._account(len(data))
        return True

    @staticmethod
    def encode_entry(key: str, outputs: Outputs, port_types: dict[str, type],
                     metrics: dict[str, Any] | None = None) -> bytes | None:
        """The entry's file bytes, or None when some output or metric cannot go to disk."""
        metrics = dict(metrics or {})
        if not values.is_plain(metrics):
            return None
        tensors: dict[str, torch.Tensor] = {}
        metas: dict[str, Any] = {}
        for port, value in outputs.items():
            enc = values.encode(value, port_types[port])
            if enc is None:
                return None
            port_tensors, metas[port] = enc
            # clones: outputs that are views of one storage cannot be saved side by side
            tensors.update({f"{port}/{name}": t.clone() for name, t in port_tensors.items()})
        header = {"format": FORMAT, "key": key, "ports": metas, "sha256": digests(tensors), "metrics": metrics}
        blob = base64.b64encode(msgpack.packb(header, use_bin_type=True)).decode("ascii")
        return safetensors_bytes(tensors, {"samplegraph": blob, "samplegraph_sha256": sha256_text(blob)})

    @staticmethod
    def _verify(data: bytes, key: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The header and tensors of a sound entry for `key`; raises on any corruption."""
        (n,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8:8 + n])["__metadata__"]
        if sha256_text(meta["samplegraph"]) != meta.get("samplegraph_sha256"):
            raise ValueError("header does not match its digest")
        header = msgpack.unpackb(base64.b64decode(meta["samplegraph"]), raw=False)
        if header.get("key") != key:
            raise ValueError("entry belongs to another key")
        tensors = st_load(data)
        if digests(tensors) != header["sha256"]:
            raise ValueError("tensor bytes do not match their digests")
        return header, tensors

    @staticmethod
    def _decode(header: dict[str, Any], tensors: dict[str, torch.Tensor], port_types: dict[str, type],
                device: torch.device) -> Entry:
        if header.get("format") != FORMAT:
            raise values.UndecodableValue(f"entry format {header.get('format')!r}, this version reads {FORMAT}")
        if set(header["ports"]) != set(port_types):
            raise values.UndecodableValue(f"ports {sorted(header['ports'])} != expected {sorted(port_types)}")
        out = {}
        for port, pmeta in header["ports"].items():
            prefix = f"{port}/"
            own = {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}
            out[port] = values.decode(port_types[port], own, pmeta, device)
        return Entry(out, header.get("metrics", {}))

    @staticmethod
    def _discard(path: Path, why: str, on_corrupt: Callable[[str, str], None] | None) -> None:
        with contextlib.suppress(OSError):
            path.unlink()
        if on_corrupt is not None:
            on_corrupt(path.stem, why)

    def entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every entry."""
        return stat_all(self.root.glob("*/*.safetensors"))

    def temp_files(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every temporary file (puts in flight, or left by dead writers)."""
        return stat_all([*self.root.glob(f".*{TMP_SUFFIX}"), *self.root.glob(f"*/.*{TMP_SUFFIX}")])

    def sweep_temp(self, max_age_s: float = STALE_TMP_S) -> int:
        """Delete temporary files whose writer is gone or that are older than `max_age_s`; how many."""
        now, swept = time.time(), 0
        for mtime, _, p in self.temp_files():
            if now - mtime > max_age_s or not pid_alive(temp_owner(p)):
                with contextlib.suppress(OSError):
                    p.unlink()
                    swept += 1
        return swept

    def total_bytes(self) -> int:
        """Bytes of the entries and of the temporary files (both take disk space)."""
        return sum(size for _, size, _ in self.entries() + self.temp_files())

    def _account(self, added: int) -> None:
        with self._lock:
            if self._bytes is None:
                self._bytes = self.total_bytes()
            else:
                self._bytes += added
            if self._bytes > self.max_bytes:
                self.sweep_temp()
                self._bytes = self.evict(int(self.max_bytes * 0.8))

    def evict(self, target: int) -> int:
        """Delete least recently used entries until the store (temporary files included) holds at
        most `target` bytes; returns what it holds then."""
        entries = sorted(self.entries())
        total = sum(size for _, size, _ in entries) + sum(size for _, size, _ in self.temp_files())
        for _, size, p in entries:
            if total <= target:
                break
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            total -= size
        return total


def write_atomically(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a temporary file named after this process (swept if it dies), then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # gone after os.replace, or never created
            tmp.unlink()


def check_root(root: Path) -> None:
    """Create `root` if needed and prove it writable, or raise CacheDirError saying why."""
    why = writable_dir_problem(root)
    if why is not None:
        raise CacheDirError(root, why)


def temp_owner(path: Path) -> int | None:
    """The writer's pid in `.<key>.safetensors.<pid>.<uuid>.tmp`, or None if the name has none."""
    parts = path.name.split(".")
    return int(parts[-3]) if len(parts) >= 4 and parts[-3].isdigit() else None


def pid_alive(pid: int | None) -> bool:
    """Whether process `pid` exists on this machine (an unparseable owner counts as alive: the age bound applies)."""
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def stat_all(paths: Iterable[Path]) -> list[tuple[float, int, Path]]:
    found = []
    for p in paths:
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        found.append((st.st_mtime, st.st_size, p))
    return found


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def digests(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """SHA-256 of each tensor's raw bytes, with its dtype and shape."""
    out = {}
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        out[name] = h.hexdigest()
    return out
