"""Checkpoints of long sampling loops, stored beside the disk cache so a re-run resumes.

File: `<cache root>/checkpoints/<node key>/<step>.safetensors`; the safetensors metadata holds
the key, the step and a SHA-256 of every tensor, checked on read like cache entries. Writes go
to a temporary file renamed into place; writing step n deletes that key's older checkpoints, and
storing the node's final output deletes them all (`discard`)."""
from __future__ import annotations

import contextlib
import json
import shutil
import struct
from pathlib import Path

import torch
from safetensors.torch import load as st_load

from ..nodes.core.context import Checkpoints
from ..nodes.core.tensorfile import safetensors_bytes
from .cache import digests, write_atomically

SUFFIX = ".safetensors"


class CheckpointStore:
    """Checkpoint files of every node key under `<root>/checkpoints`."""

    def __init__(self, root: str | Path):
        self.root = Path(root) / "checkpoints"

    def for_key(self, key: str) -> KeyedCheckpoints:
        """The checkpoint service of the node cached under `key`."""
        return KeyedCheckpoints(self.root / key, key)


class KeyedCheckpoints(Checkpoints):
    """Checkpoints of one node key: save a step's tensors, load the latest sound one, discard all."""

    def __init__(self, folder: Path, key: str):
        self.folder = folder
        self.key = key

    @property
    def enabled(self) -> bool:
        return True

    def save(self, step: int, tensors: dict[str, torch.Tensor]) -> None:
        """Write step `step` atomically, then delete this key's other checkpoints; an I/O error skips it
        (a checkpoint is an optimisation, never a reason to fail the run)."""
        own = {name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}
        meta = {"key": self.key, "step": str(step), "sha256": json.dumps(digests(own), sort_keys=True)}
        path = self.folder / f"{step}{SUFFIX}"
        try:
            write_atomically(path, safetensors_bytes(own, meta))
        except OSError:
            return
        for old in self.folder.iterdir():
            if old != path:
                with contextlib.suppress(OSError):
                    old.unlink()

    def load_latest(self) -> tuple[int, dict[str, torch.Tensor]] | None:
        """(step, tensors) of the newest sound checkpoint, or None; unsound files are deleted."""
        for path in sorted(self._files(), key=lambda p: -int(p.stem)):
            try:
                return int(path.stem), read_checkpoint(path.read_bytes(), self.key)
            except Exception:  # truncated, foreign or corrupt: drop it, try an older one
                with contextlib.suppress(OSError):
                    path.unlink()
        return None

    def discard(self) -> None:
        """Delete every checkpoint of this key (its final output is stored)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return [p for p in self.folder.glob(f"*{SUFFIX}") if p.stem.isdigit()]


def read_checkpoint(data: bytes, key: str) -> dict[str, torch.Tensor]:
    """The tensors of a sound checkpoint of `key`; raises on any mismatch or corruption."""
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8:8 + n])["__metadata__"]
    if meta.get("key") != key:
        raise ValueError("checkpoint belongs to another key")
    tensors = st_load(data)
    if digests(tensors) != json.loads(meta["sha256"]):
        raise ValueError("tensor bytes do not match their digests")
    return tensors
