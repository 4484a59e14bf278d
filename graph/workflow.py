"""The workflow as data: a JSON document <-> pydantic models, overrides, links."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import Problem, WorkflowError

NODE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class NodeDecl(BaseModel):
    """One node of a workflow: its kind, parameters and input links ("node" or "node.port")."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str | list[str]] = Field(default_factory=dict)


class Workflow(BaseModel):
    """A DAG of nodes plus the outputs to compute; load it from JSON or build it in Python."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    seed: int = 0
    nodes: dict[str, NodeDecl] = Field(default_factory=dict)
    outputs: list[str] = Field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> Workflow:
        """Read a workflow file; malformed JSON is reported with line and column."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise WorkflowError([Problem(f"cannot read workflow file: {e.strerror or e}")], str(path)) from None
        return cls.from_json(text, source=str(path))

    @classmethod
    def from_json(cls, text: str, source: str | None = None) -> Workflow:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            msg = f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}"
            raise WorkflowError([Problem(msg)], source) from None
        except RecursionError:
            raise WorkflowError([Problem("malformed JSON: nested too deeply to parse")], source) from None
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> Workflow:
        """Check the document's structure (not yet the node kinds) and build the model."""
        if not isinstance(data, dict):
            raise WorkflowError([Problem(f"expected a JSON object at the top level, got {type(data).__name__}")], source)
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise WorkflowError([structure_problem(err) for err in e.errors()], source, salvage(data)) from None

    def add(self, node_id: str, kind: str, inputs: dict[str, str | list[str]] | None = None,
            **params: Any) -> str:
        """Add a node in Python; returns its id so it can be used as a link."""
        self.nodes[node_id] = NodeDecl(kind=kind, params=params, inputs=inputs or {})
        return node_id

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2)

    def with_overrides(self, overrides: dict[str, Any]) -> Workflow:
        """A copy with `{"node.param": value}` applied; unknown nodes are reported together."""
        copy = self.model_copy(deep=True)
        problems = []
        for target, value in overrides.items():
            node_id, dot, param = target.partition(".")
            if not dot or not param:
                problems.append(Problem(f"override '{target}' must look like node.param=value"))
            elif node_id not in copy.nodes:
                problems.append(Problem(f"override '{target}' names no node", hint=suggest(node_id, copy.nodes)))
            else:
                copy.nodes[node_id].params[param] = value
        if problems:
            raise WorkflowError(problems)
        return copy


@dataclass(frozen=True)
class PartialWorkflow:
    """What still parses of a structurally broken document: its well-formed nodes, and the ids
    of the broken ones (links to those are not reported again)."""

    workflow: Workflow
    broken: frozenset[str]


def salvage(data: dict) -> PartialWorkflow | None:
    """The well-formed node declarations of a document whose other fields are well-formed."""
    nodes = data.get("nodes")
    if not isinstance(nodes, dict):
        return None
    try:
        wf = Workflow.model_validate({**data, "nodes": {}})
    except ValidationError:
        return None
    broken = set()
    for node_id, decl in nodes.items():
        try:
            wf.nodes[node_id] = NodeDecl.model_validate(decl)
        except ValidationError:
            broken.add(node_id)
    return PartialWorkflow(wf, frozenset(broken))


def parse_link(link: str) -> tuple[str, str | None]:
    """"node" -> (node, None); "node.port" -> (node, port)."""
    node, dot, port = link.partition(".")
    return node, (port if dot else None)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse CLI `node.param=value`; the value is JSON when it parses, else a string."""
    target, eq, raw = text.partition("=")
    if not eq:
        raise WorkflowError([Problem(f"--set '{text}' must look like node.param=value")])
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return target.strip(), value


def suggest(name: str, choices: Any) -> str | None:
    """'did you mean ...?' for the closest of `choices`, if any is close."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def structure_problem(err: dict) -> Problem:
    """Turn a pydantic error on the document's structure into a located problem."""
    loc = [str(p) for p in err["loc"]]
    node = loc[1] if len(loc) >= 2 and loc[0] == "nodes" else None
    where = ".".join(loc[2:]) if node is not None else ".".join(loc)
    got = f", got {err['input']!r}" if err["type"] not in ("missing",) else ""
    msg = err["msg"].lower()
    if err["type"] == "extra_forbidden":
        field = loc[-1]
        allowed = NodeDecl.model_fields if node is not None else Workflow.model_fields
        return Problem(f"unknown field '{field}'", node, None if node is None else None,
                       hint=suggest(field, allowed) or f"allowed: {', '.join(allowed)}")
    return Problem(f"{msg}{got}", node, f"field '{where}'" if where else None)
