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


def canonical_text(value: Any) -> str:
    """Deterministic JSON text: sorted keys, no whitespace, non-ASCII kept."""
    return CANONICAL.encode(value) if _C_ENCODER is None else "".join(_C_ENCODER(value, 0))


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no whitespace, UTF-8."""
    return canonical_text(value).encode("utf-8", "surrogatepass")


def node_key(kind: str, version: int, params: dict[str, Any], inputs: dict[str, Any],
             seed: int | None, external: Any = None) -> str:
    """The cache key of a node's outputs: SHA-256 of the canonical JSON of
    {"kind", "version", "params", "inputs"[, "seed"][, "external"]}; `inputs` maps port -> key (or
    list of keys); `external`: state outside the graph the node reads (a file's size and mtime)."""
    return KeyWriter(kind, version).key(params, inputs, seed, external)


class KeyWriter:
    """node_key for one (kind, version), the text those two contribute written once.

    The canonical JSON of the key document, written field by field in its sorted order (external,
    inputs, kind, params, seed, version): the same bytes as canonical_json of the whole dict,
    without building, sorting and encoding that dict for every node."""

    def __init__(self, kind: str, version: int):
        self.middle = ',"kind":' + canonical_text(kind) + ',"params":'
        self.tail = ',"version":' + canonical_text(version) + "}"

    def key(self, params: dict[str, Any], inputs: dict[str, Any], seed: int | None, external: Any = None) -> str:
        head = "{" if external is None else '{"external":' + canonical_text(external) + ","
        seeded = "" if seed is None else ',"seed":' + canonical_text(seed)
        text = (head + '"inputs":' + (canonical_text(inputs) if inputs else "{}") + self.middle
                + (canonical_text(params) if params else "{}") + seeded + self.tail)  # (a source node's: no inputs)
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
