"""Canonical hashing: Merkle cache keys from (kind, version, params, input keys, seed).

Tensors are never hashed: a node's key depends only on its own declaration and the keys
of its inputs, so a key is known before anything runs."""
from __future__ import annotations

import hashlib
import json
from typing import Any

# json.dumps builds a new encoder per call when given options; one configured encoder (it keeps
# no state between calls) saves that on every node key. Key documents are trees (JSON dumps of
# parameters, key strings), so the circular-reference bookkeeping is skipped.
CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True,
                             check_circular=False)


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no whitespace, UTF-8."""
    return CANONICAL.encode(value).encode("utf-8", "surrogatepass")


def node_key(kind: str, version: int, params: dict[str, Any], inputs: dict[str, Any],
             seed: int | None, external: Any = None) -> str:
    """The cache key of a node's outputs; `inputs` maps port -> key (or list of keys);
    `external`: state outside the graph the node reads (a file's size and mtime)."""
    doc = {"kind": kind, "version": version, "params": params, "inputs": inputs}
    if seed is not None:
        doc["seed"] = seed
    if external is not None:
        doc["external"] = external
    return hashlib.sha256(canonical_json(doc)).hexdigest()
