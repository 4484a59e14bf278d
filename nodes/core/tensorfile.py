"""Safetensors bytes that depend only on their content: the one writer of every safetensors file
samplegraph makes (io.save_tensor, the training scripts' weights, the disk cache).

The safetensors library serialises the header from a Rust HashMap, so the metadata keys come out
in a per-process random order and identical results give different files. We re-serialise the
header with sorted keys; the tensor data and its offsets are untouched."""
from __future__ import annotations

import json
import struct

import torch
from safetensors.torch import save as st_save

ALIGN = 8  # safetensors pads the header with spaces so the data starts 8-byte aligned


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors file of `tensors` and `metadata`, its header JSON with sorted keys."""
    data = st_save(tensors, metadata=metadata)
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % ALIGN)
    return struct.pack("<Q", len(text)) + text + data[8 + n:]
