"""Canonical hashing: Merkle cache keys from (kind, version, params, input keys, seed).

Tensors are never hashed: a node's key depends only on its own declaration and the keys
of its inputs, so a key is known before anything runs."""
from __future__ import annotations

import hashlib
import json
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

# json.dumps builds a new encoder per call when given options, and JSONEncoder.encode builds a new
# C encoder per call as well; one C encoder made once (it keeps no state between calls: key documents
# are trees, so no circular-reference markers) writes the same bytes without that per-node cost.
CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True,
                             check_circular=False)
_C_ENCODER = None if c_make_encoder is None else c_make_encoder(
    None, CANONICAL.default, encode_basestring, None, ":", ",", True, False, True)


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no whitespace, UTF-8."""
    text = CANONICAL.encode(value) if _C_ENCODER is None else "".join(_C_ENCODER(value, 0))
    return text.encode("utf-8", "surrogatepass")


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
