"""Typed errors. Every message names where (node id, port, parameter, file), what was
expected and what was found, so a user can fix a workflow without reading a traceback."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class SamplegraphError(Exception):
    """Base of every error samplegraph raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One located problem of a workflow: `where` is e.g. "param 'steps'" or "input 'x'"."""

    message: str
    node: str | None = None
    where: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        place = []
        if self.node is not None:
            place.append(f"node '{self.node}'")
        if self.where:
            place.append(self.where)
        text = (", ".join(place) + ": " if place else "") + self.message
        return text + (f" ({self.hint})" if self.hint else "")


class WorkflowError(SamplegraphError):
    """A workflow that cannot run, with every problem found (not only the first)."""

    def __init__(self, problems: list[Problem], source: str | None = None, partial: Any = None):
        self.problems = list(problems)
        self.source = source
        self.partial = partial  # a PartialWorkflow when some node declarations still parsed
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{len(self.problems)} problem(s) in workflow" + (f" {self.source}" if self.source else "")
        return head + ":\n" + "\n".join(f"  - {p}" for p in self.problems)


class NodeError(SamplegraphError):
    """A node rejected its inputs at run time (raised by node code, located by the executor)."""


class NodeRunError(SamplegraphError):
    """A node failed while running; names the node id and kind."""

    def __init__(self, node: str, kind: str, message: str):
        self.node, self.kind, self.detail = node, kind, message
        super().__init__(f"node '{node}' ({kind}): {message}")

    def __reduce__(self) -> tuple:  # pickled whole (a Ray task's error reaches the driver as raised)
        return type(self), (self.node, self.kind, self.detail)


class RunCancelled(SamplegraphError):
    """The run was cancelled; nothing partial was stored in the cache."""


class RegistryError(SamplegraphError):
    """A node class or plugin could not be registered (bad hints, duplicate kind, bad entry point)."""
