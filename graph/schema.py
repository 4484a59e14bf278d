"""JSON Schema (draft 2020-12) of the workflow format, with every registered node's
parameters and ports, so editors can complete and check workflow files."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .spec import NodeSpec
from .workflow import NODE_ID

LINK = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_]+)?$",
        "description": "a link: 'node' or 'node.port'"}


def workflow_schema(specs: Mapping[str, NodeSpec]) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    node_refs = []
    for kind in sorted(specs):
        name = "node:" + kind
        defs[name] = node_schema(specs[kind], defs)
        node_refs.append({"$ref": f"#/$defs/{name}"})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "samplegraph workflow",
        "type": "object",
        "additionalProperties": False,
        "required": ["nodes", "outputs"],
        "properties": {
            "version": {"const": 1, "default": 1},
            "seed": {"type": "integer", "default": 0, "description": "seed of every NoiseSource in the run"},
            "nodes": {"type": "object", "propertyNames": {"pattern": NODE_ID.pattern},
                      "additionalProperties": {"oneOf": node_refs}},
            "outputs": {"type": "array", "items": LINK, "minItems": 1},
        },
        "$defs": defs,
    }


def node_schema(spec: NodeSpec, defs: dict[str, Any]) -> dict[str, Any]:
    params = spec.params.model_json_schema(ref_template="#/$defs/{model}")
    defs.update(params.pop("$defs", {}))
    params.pop("title", None)
    ports = {p.name: ({"type": "array", "items": LINK} if p.many else LINK) | {"description": p.type_name}
             for p in spec.inputs}
    inputs = {"type": "object", "additionalProperties": False, "properties": ports,
              "required": [p.name for p in spec.inputs if p.required]}
    required = ["kind"] + (["inputs"] if inputs["required"] else [])
    return {"type": "object", "description": spec.doc, "additionalProperties": False, "required": required,
            "properties": {"kind": {"const": spec.kind}, "params": params, "inputs": inputs}}
