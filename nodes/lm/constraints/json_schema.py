"""constraint.json_schema: text that is a JSON document valid under a JSON schema, through llguidance."""
from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from ...api import Node, node
from ..potential import Potential
from .grammar import GrammarPotential, checked_grammar


@node("constraint.json_schema", version=1)
class JsonSchemaConstraint(Node):
    """JSON that validates against a schema, compiled by llguidance (Moskal et al. 2025) with byte-level masks."""

    json_schema: dict[str, Any] = Field(..., description="the JSON schema (an object)")
    compact: bool = Field(True, description="no whitespace between tokens (',' and ':'); False: any JSON "
                                            "whitespace (an 'x-guidance' entry in the schema takes precedence)")

    def run(self) -> Potential:
        schema = dict(self.json_schema)
        if self.compact and "x-guidance" not in schema:
            schema["x-guidance"] = {"whitespace_flexible": False}
        return GrammarPotential(checked_grammar("start: %json " + json.dumps(schema), "parameter 'json_schema'"))
