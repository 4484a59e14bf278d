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
    seed: int = Field(0, ge=0, le=2**63 - 1, description="the run's noise seed (an int64, as the noise keys need)")
    nodes: dict[str, NodeDecl] = Field(default_factory=dict)
    outputs: list[str] = Field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> Workflow:
        """Read a workflow file (UTF-8, a BOM allowed); malformed content is reported with line and column."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise WorkflowError([Problem(f"cannot read workflow file: {e.strerror or e}")], str(path)) from None
        if data.startswith(PNG_SIGNATURE):
            return cls.from_json(png_workflow(data, str(path)), source=str(path))
        return cls.from_json(decode_text(data, str(path)), source=str(path))

    @classmethod
    def from_json(cls, text: str, source: str | None = None) -> Workflow:
        """Parse JSON text; every problem of the text itself (syntax, nesting, duplicate keys, huge
        integers, lone surrogates) is located and reported before the structure is checked."""
        return cls.from_dict(parse_json(text, source), source=source)

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


MAX_DEPTH = 64  # no workflow needs deeper JSON; deeper documents are refused before parsing
MAX_INT_DIGITS = 40  # far beyond int64 (19 digits): longer literals are refused, not converted
JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def decode_text(data: bytes, source: str | None) -> str:
    """UTF-8 text of a file (a UTF-8 BOM is skipped); other encodings are a located problem."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise WorkflowError([Problem("the file is UTF-16 (it starts with a UTF-16 byte-order mark); "
                                     "save it as UTF-8")], source)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line, col = position(data[:e.start].decode("utf-8", errors="replace"), None)
        raise WorkflowError([Problem(f"invalid UTF-8 at line {line}, column {col} (byte {e.start}): "
                                     f"{e.reason}; save the file as UTF-8")], source) from None


def position(text: str, index: int | None) -> tuple[int, int]:
    """(line, column), 1-based, of `index` in `text` (None: its end)."""
    before = text if index is None else text[:index]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


def parse_json(text: str, source: str | None) -> Any:
    """json.loads with located problems instead of exceptions or silent last-wins duplicates."""
    problems = [*depth_problems(text)]
    if not problems:
        try:
            data = json.loads(text, object_pairs_hook=KeyedObject.from_pairs, parse_int=bounded_int)
        except json.JSONDecodeError as e:
            problems.append(Problem(f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}"))
        except HugeInteger as e:
            line, col = position(text, text.find(e.digits))
            problems.append(Problem(f"an integer of {len(e.digits)} digits at line {line}, column {col}; "
                                    f"workflow integers fit in 64 bits"))
        else:
            problems.extend(content_problems(data))
            if not problems:
                return data
    raise WorkflowError(problems, source)


def depth_problems(text: str) -> list[Problem]:
    """A problem at the first bracket nested deeper than MAX_DEPTH (strings skipped)."""
    depth = 0
    for m in JSON_TOKEN.finditer(text):
        token = m.group()
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                line, col = position(text, m.start())
                return [Problem(f"JSON nested deeper than {MAX_DEPTH} levels at line {line}, column {col}")]
        elif token in "]}":
            depth -= 1
    return []


class HugeInteger(ValueError):
    def __init__(self, digits: str):
        super().__init__(digits)
        self.digits = digits


def bounded_int(literal: str) -> int:
    """json's parse_int: refuse absurdly long literals (Python refuses past 4,300 digits with a bare error)."""
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise HugeInteger(literal)
    return int(literal)


class KeyedObject(dict):
    """A JSON object that remembers the keys that appeared more than once (json keeps the last)."""

    duplicates: tuple[str, ...] = ()

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> KeyedObject:
        obj = cls(pairs)
        if len(obj) < len(pairs):
            seen: set[str] = set()
            obj.duplicates = tuple(k for k, _ in pairs if k in seen or seen.add(k))
        return obj


def content_problems(data: Any) -> list[Problem]:
    """Duplicate keys and lone surrogates anywhere in a parsed document, each located by its path."""
    problems = []
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str) and has_lone_surrogate(value):
            problems.append(Problem(f"{describe_path(path)} contains a lone surrogate (not Unicode text): "
                                    f"{value.encode('utf-8', 'backslashreplace').decode('ascii', 'backslashreplace')!r}"))
        elif isinstance(value, dict):
            for key in getattr(value, "duplicates", ()):
                problems.append(Problem(f"key '{key}' appears more than once in {describe_path(path)}; "
                                        f"JSON keeps only the last: remove or rename the others"))
            for key, item in value.items():
                stack.append((f"{path}.{key}" if path else key, key))
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
    return sorted(set(problems), key=str)


def has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def describe_path(path: str) -> str:
    return f"'{path}'" if path else "the top-level object"


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
    if depth_problems(raw):
        raise WorkflowError([Problem(f"--set '{target}': the value is nested deeper than {MAX_DEPTH} levels")])
    try:
        value = json.loads(raw, parse_int=bounded_int)
    except HugeInteger as e:
        raise WorkflowError([Problem(f"--set '{target}': an integer of {len(e.digits)} digits; "
                                     f"workflow integers fit in 64 bits")]) from None
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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_workflow(data: bytes, source: str) -> str:
    """The workflow JSON that io.save_image embeds in a PNG's "workflow" text chunk (ComfyUI's key)."""
    from io import BytesIO

    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(BytesIO(data)) as image:
            text = getattr(image, "text", {}).get("workflow")
    except (OSError, UnidentifiedImageError) as e:
        raise WorkflowError([Problem(f"cannot read the PNG: {e}")], source) from None
    if text is None:
        raise WorkflowError([Problem("this PNG carries no 'workflow' text chunk (io.save_image writes one unless "
                                     "its param 'metadata' is false)")], source)
    return text
