"""Output caches keyed by Merkle keys: an in-memory LRU bounded in bytes, and an on-disk
store shared by processes.

Disk entry: one safetensors file per key, `<root>/<key[:2]>/<key>.safetensors`; its header
metadata holds the msgpack (base64) description of every output port and a SHA-256 of each
tensor's bytes. Writes go to a temporary file and are renamed into place (atomic on POSIX),
so readers see a whole entry or none. Reads verify the digests; a corrupt or truncated
entry is deleted and reported as a miss, so it is recomputed, never returned. The store is
bounded in bytes: when over, least-recently-used entries (mtime, refreshed on read) go."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from . import values

FORMAT = 1
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


class DiskCache:
    """Process-shared on-disk store of encodable node outputs, bounded in bytes."""

    def __init__(self, root: str | Path, max_bytes: int = 10 << 30):
        self.root = Path(root).expanduser()
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._bytes: int | None = None  # running estimate; rescanned when it passes the bound

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str, port_types: dict[str, type], device: torch.device,
            on_corrupt: Callable[[str, str], None] | None = None) -> Entry | None:
        """The outputs stored under `key`, or None; a bad entry is deleted and `on_corrupt(key, why)` told."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            self._discard(path, f"unreadable: {e}", on_corrupt)
            return None
        try:
            entry = self._decode(data, key, port_types, device)
        except Exception as e:  # any malformation means: discard and recompute
            self._discard(path, f"{type(e).__name__}: {e}", on_corrupt)
            return None
        try:
            os.utime(path)
        except OSError:
            pass
        return entry

    def put(self, key: str, outputs: Outputs, metrics: dict[str, Any] | None = None) -> bool:
        """Store when every output (and the metrics) is encodable; returns whether it was stored."""
        metrics = dict(metrics or {})
        if not values.is_plain(metrics):
            return False
        tensors: dict[str, torch.Tensor] = {}
        metas: dict[str, Any] = {}
        for port, value in outputs.items():
            enc = values.encode(value)
            if enc is None:
                return False
            port_tensors, metas[port] = enc
            # clones: outputs that are views of one storage cannot be saved side by side
            tensors.update({f"{port}/{name}": t.clone() for name, t in port_tensors.items()})
        header = {"format": FORMAT, "key": key, "ports": metas, "sha256": digests(tensors), "metrics": metrics}
        blob = base64.b64encode(msgpack.packb(header, use_bin_type=True)).decode("ascii")
        data = st_save(tensors, metadata={"samplegraph": blob, "samplegraph_sha256": sha256_text(blob)})
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        self._account(len(data))
        return True

    def _decode(self, data: bytes, key: str, port_types: dict[str, type], device: torch.device) -> Entry:
        (n,) = struct.unpack("<Q", data[:8])
        meta = json.loads(data[8:8 + n])["__metadata__"]
        if sha256_text(meta["samplegraph"]) != meta.get("samplegraph_sha256"):
            raise ValueError("header does not match its digest")
        header = msgpack.unpackb(base64.b64decode(meta["samplegraph"]), raw=False)
        if header.get("format") != FORMAT or header.get("key") != key:
            raise ValueError("entry belongs to another key or format")
        tensors = st_load(data)
        if digests(tensors) != header["sha256"]:
            raise ValueError("tensor bytes do not match their digests")
        if set(header["ports"]) != set(port_types):
            raise ValueError(f"ports {sorted(header['ports'])} != expected {sorted(port_types)}")
        out = {}
        for port, pmeta in header["ports"].items():
            prefix = f"{port}/"
            own = {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}
            out[port] = values.decode(port_types[port], own, pmeta, device)
        return Entry(out, header.get("metrics", {}))

    @staticmethod
    def _discard(path: Path, why: str, on_corrupt: Callable[[str, str], None] | None) -> None:
        try:
            path.unlink()
        except OSError:
            pass
        if on_corrupt is not None:
            on_corrupt(path.stem, why)

    def entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every entry."""
        found = []
        for p in self.root.glob("*/*.safetensors"):
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            found.append((st.st_mtime, st.st_size, p))
        return found

    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def _account(self, added: int) -> None:
        with self._lock:
            if self._bytes is None:
                self._bytes = self.total_bytes()
            else:
                self._bytes += added
            if self._bytes > self.max_bytes:
                self._bytes = self.evict(int(self.max_bytes * 0.8))

    def evict(self, target: int) -> int:
        """Delete least recently used entries until the store holds at most `target` bytes."""
        entries = sorted(self.entries())
        total = sum(size for _, size, _ in entries)
        for _, size, p in entries:
            if total <= target:
                break
            try:
                p.unlink()
                total -= size
            except FileNotFoundError:
                total -= size
        return total


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
