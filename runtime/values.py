"""Node output values <-> (tensors, msgpack-able metadata) for the disk cache, and byte
sizes for the memory cache. Decoding is driven by the port's declared class, never by a
type name read from disk, so a cache file cannot make us import or construct anything else."""
from __future__ import annotations

from typing import Any

import torch

PLAIN = (type(None), bool, int, float, str)


def is_plain(value: Any) -> bool:
    """JSON/msgpack-representable data: scalars, lists and str-keyed dicts of them."""
    if isinstance(value, PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


def encode(value: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(tensors, meta) for one output, or None when it can only live in memory."""
    if isinstance(value, torch.Tensor):
        return {"t": value.detach().cpu().contiguous()}, {"kind": "tensor", "device": str(value.device)}
    if hasattr(value, "cache_encode") and hasattr(type(value), "cache_decode"):
        tensors, meta = value.cache_encode()
        return ({k: t.detach().cpu().contiguous() for k, t in tensors.items()},
                {"kind": "object", "meta": meta})
    if is_plain(value):
        return {}, {"kind": "plain", "value": value}
    return None


def decode(port_type: type, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
           device: torch.device) -> Any:
    """Rebuild an output of the declared `port_type` from what `encode` produced."""
    kind = meta["kind"]
    if kind == "tensor":
        return tensors["t"].to(device)
    if kind == "object":
        if not hasattr(port_type, "cache_decode"):
            raise ValueError(f"port type {port_type.__name__} cannot decode a cached object")
        return port_type.cache_decode(tensors, meta["meta"])
    if kind == "plain":
        return meta["value"]
    raise ValueError(f"unknown cached value kind {kind!r}")


def nbytes(value: Any) -> int:
    """Approximate memory held by a value (tensors exactly; live objects if they say)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if hasattr(value, "cache_encode"):
        return sum(t.numel() * t.element_size() for t in value.cache_encode()[0].values())
    size = getattr(value, "nbytes", None)
    if isinstance(size, int):
        return size
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0


def describe(value: Any) -> str:
    """Short description for reports: 'Tensor(4096, 2) float32 cpu', '0.0312', 'GaussianMixture'."""
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')} {value.device}"
    if isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str):
        return value if len(value) < 200 else value[:197] + "..."
    return type(value).__name__


def device_of(value: Any) -> str | None:
    if isinstance(value, torch.Tensor):
        return str(value.device)
    dev = getattr(value, "device", None)
    return str(dev) if isinstance(dev, torch.device) else None
