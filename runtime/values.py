"""Node output values <-> (tensors, msgpack-able metadata) for the disk cache, and byte
sizes for the memory cache. Decoding is driven by the port's declared class, never by a
type name read from disk, so a cache file cannot make us import or construct anything else."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import msgpack
import torch

PLAIN = (type(None), bool, int, float, str)


class UndecodableValue(ValueError):
    """A well-formed cache entry that this code cannot rebuild (another version's port types)."""


def is_plain(value: Any) -> bool:
    """JSON/msgpack-representable data: scalars, lists and str-keyed dicts of them."""
    if isinstance(value, PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False


def same_plain(a: Any, b: Any) -> bool:
    """Equality of plain data in which NaN equals NaN (a NaN metric round-trips through msgpack
    exactly) and types must match (a tuple comes back as a list: not the same value)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_plain(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_plain(a[k], b[k]) for k in a)
    return a == b


def encode(value: Any, port_type: type) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(tensors, meta) for one output of the declared `port_type`, or None when it can only live
    in memory: whatever is written must be what `decode(port_type, ...)` rebuilds exactly."""
    if isinstance(value, torch.Tensor):
        return {"t": value.detach().cpu().contiguous()}, {"kind": "tensor", "device": str(value.device)}
    if decodable_object(value, port_type):
        tensors, meta = value.cache_encode()
        return ({k: t.detach().cpu().contiguous() for k, t in tensors.items()},
                {"kind": "object", "meta": meta})
    if is_plain(value) and same_plain(msgpack.unpackb(msgpack.packb(value), raw=False), value):
        # the round-trip test keeps tuples (which come back as lists) in memory
        return {}, {"kind": "plain", "value": value}
    return None


def decodable_object(value: Any, port_type: type) -> bool:
    """Whether `port_type.cache_decode` rebuilds `value`: only when the value is exactly of the
    port's class (a subclass, e.g. a GaussianMixture on a Distribution port or AscendingSigmas on a
    Sigmas port, would come back as something else, or not at all)."""
    return type(value) is port_type and hasattr(value, "cache_encode") and hasattr(port_type, "cache_decode")


def decode(port_type: type, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
           device: torch.device) -> Any:
    """Rebuild an output of the declared `port_type` from what `encode` produced."""
    kind = meta["kind"]
    if kind == "tensor":
        return tensors["t"].to(device)
    if kind == "object":
        if not hasattr(port_type, "cache_decode"):
            raise UndecodableValue(f"port type {port_type.__name__} cannot decode a cached object")
        return port_type.cache_decode(tensors, meta["meta"])
    if kind == "plain":
        return meta["value"]
    raise UndecodableValue(f"unknown cached value kind {kind!r}")


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


DESCRIBED = 200  # characters of a description, at most


def describe(value: Any) -> str:
    """Short description for reports: 'Tensor(4096, 2) float32 cpu', '0.0312', 'GaussianMixture', and a
    dataclass of plain fields with them: 'CompensationRatios(ratios=(0.981, 1.02, ...), sigmas=(...))'."""
    if isinstance(value, str):
        return value if len(value) < DESCRIBED else value[:DESCRIBED - 3] + "..."
    text = brief(value)
    return text if len(text) < DESCRIBED else text[:DESCRIBED - 4] + "...)"


def brief(value: Any, depth: int = 0) -> str:
    """describe's text before it is cut: numbers inside to 4 digits, a sequence's first 6 items, a dataclass's fields
    (containers three levels deep; deeper, or any other object: its class name)."""
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')} {value.device}"
    if isinstance(value, int):  # bool too
        return repr(value)
    if isinstance(value, float):
        return repr(value) if depth == 0 else f"{value:.4g}"
    if isinstance(value, str):
        return repr(value)
    if depth < 3 and isinstance(value, (list, tuple)):
        items = [brief(v, depth + 1) for v in value[:6]] + (["..."] if len(value) > 6 else [])
        return "(" + ", ".join(items) + ("," if len(value) == 1 else "") + ")"
    if depth < 3 and isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {brief(v, depth + 1)}" for k, v in list(value.items())[:6]) + "}"
    if depth < 1 and dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = ", ".join(f"{f.name}={brief(getattr(value, f.name), depth + 1)}" for f in dataclasses.fields(value))
        return f"{type(value).__name__}({fields})"
    return type(value).__name__


def report_value(value: Any) -> bool | int | float | str:
    """What a run report stores for an output: numbers as JSON numbers (non-finite floats as the
    strings 'nan', 'inf', '-inf', which strict JSON lacks), everything else as `describe` says."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (bool, int, float)):
        return value
    return describe(value)


def device_of(value: Any) -> str | None:
    if isinstance(value, PLAIN):
        return None
    if isinstance(value, torch.Tensor):
        return str(value.device)
    dev = getattr(value, "device", None)
    return str(dev) if isinstance(dev, torch.device) else None
